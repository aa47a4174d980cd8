"""Retries that outlast an outage: each channel's published schedule by default (webhooks retry for more than
24 hours), overridable per workflow and per webhook endpoint; an endpoint is disabled only after both a span of
failures and a number of failed attempts."""

from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from apps.deliveries.models import Delivery, DeliveryStatus, WebhookEndpoint
from apps.deliveries.services import deliveries_send
from apps.runs.models import RunStatus
from tests import factories

from .test_webhook_delivery import _queued

pytestmark = pytest.mark.django_db

SVIX = [5, 300, 1800, 7200, 18000, 36000, 36000]


def _fail_through(delivery, receiver) -> list[float]:
    """Send the delivery until it is done, the receiver answering 503; the waits (seconds) it was given."""
    waits = []
    receiver.default = (503, {}, b"down")
    while True:
        Delivery.objects.filter(id=delivery.id).update(next_attempt_at=timezone.now())
        before = timezone.now()
        deliveries_send(delivery_ids=[delivery.id])
        delivery.refresh_from_db()
        if delivery.status != DeliveryStatus.QUEUED:
            return waits
        waits.append((delivery.next_attempt_at - before).total_seconds())


def test_the_service_s_webhook_schedule_is_svix_s_and_retries_for_more_than_a_day():
    import config.settings.base as production

    assert production.ROWBELL_RETRY_SCHEDULE_WEBHOOK == SVIX
    assert sum(SVIX) > 24 * 3600
    readme = Path(__file__).resolve().parents[2].joinpath("README.md").read_text()
    assert "immediately, then 5 s, 5 min, 30 min, 2 h, 5 h, 10 h and 10 h after each failure" in readme


def test_a_webhook_follows_the_default_schedule_then_fails(product, receiver, settings):
    settings.ROWBELL_RETRY_SCHEDULE_WEBHOOK = SVIX
    endpoint = factories.make_endpoint(product, receiver.url())
    factories.make_workflow(product, key="w", steps=[factories.webhook_step(endpoint)])
    [delivery] = Delivery.objects.filter(request=_queued(product))
    assert (delivery.retry_schedule, delivery.max_attempts) == (SVIX, 8)

    waits = _fail_through(delivery, receiver)
    assert len(waits) == 7 and len(receiver.requests) == 8
    for wait, floor in zip(waits, SVIX, strict=True):
        assert floor - 1 <= wait <= floor * 1.1 + 1, (wait, floor)  # the published delay, plus up to 10% jitter
    assert delivery.status == DeliveryStatus.FAILED
    delivery.run.refresh_from_db()
    assert delivery.run.status == RunStatus.FAILED and "gave up after 8 attempts" in delivery.run.error


@pytest.mark.parametrize(("retry", "schedule"), [({}, SVIX[:2]), ({"max_attempts": 10}, SVIX + [36000, 36000])])
def test_max_attempts_alone_cuts_or_extends_the_default_schedule(product, receiver, settings, retry, schedule):
    settings.ROWBELL_RETRY_SCHEDULE_WEBHOOK = SVIX[: len(schedule)] if not retry else SVIX
    endpoint = factories.make_endpoint(product, receiver.url())
    factories.make_workflow(product, key="w", steps=[factories.webhook_step(endpoint)], retry=retry)
    [delivery] = Delivery.objects.filter(request=_queued(product))
    assert delivery.retry_schedule == schedule


def test_each_channel_has_its_own_default(product, settings):
    settings.ROWBELL_RETRY_SCHEDULE_EMAIL = [30, 120]
    factories.make_workflow(
        product, key="w", steps=[factories.email_step(to="a@example.com", subject="s")], sandbox=True
    )
    [delivery] = Delivery.objects.filter(request=_queued(product))
    assert (delivery.retry_schedule, delivery.max_attempts) == ([30, 120], 3)


@pytest.mark.parametrize(
    ("retry", "schedule", "attempts"),
    [
        ({"schedule": ["1m", "1h"]}, [60, 3600], 3),
        ({"schedule": []}, [], 1),
        ({"max_attempts": 3}, [10, 10], 3),  # the endpoint's schedule, extended with its last delay
        ({"max_attempts": 1}, [], 1),
        ({"max_attempts": 2, "backoff": "1s"}, None, 2),  # exponential, as asked
    ],
)
def test_a_workflow_s_retry_overrides_the_endpoint_s_and_the_default(
    product, receiver, product_client, settings, retry, schedule, attempts
):
    settings.ROWBELL_RETRY_SCHEDULE_WEBHOOK = SVIX
    endpoint = factories.make_endpoint(product, receiver.url())
    patched = product_client.patch(f"/api/v1/webhooks/{endpoint.id}", {"retry_schedule": ["10s"]}, format="json")
    assert patched.status_code == 200 and patched.json()["retry_schedule"] == [10]
    factories.make_workflow(product, key="w", steps=[factories.webhook_step(endpoint)], retry=retry)
    [delivery] = Delivery.objects.filter(request=_queued(product))
    assert (delivery.retry_schedule, delivery.max_attempts) == (schedule, attempts)


def test_an_endpoint_s_own_schedule_applies_to_its_webhooks(product, receiver, product_client):
    created = product_client.post(
        "/api/v1/webhooks", {"url": receiver.url(), "retry_schedule": ["1s", 2, "1m"]}, format="json"
    )
    assert created.status_code == 201 and created.json()["retry_schedule"] == [1, 2, 60], created.json()
    endpoint = WebhookEndpoint.objects.get(id=created.json()["id"])
    factories.make_workflow(product, key="w", steps=[factories.webhook_step(endpoint)])
    [delivery] = Delivery.objects.filter(request=_queued(product))
    assert (delivery.retry_schedule, delivery.max_attempts) == ([1, 2, 60], 4)
    reset = product_client.patch(f"/api/v1/webhooks/{endpoint.id}", {"retry_schedule": None}, format="json")
    assert reset.status_code == 200 and reset.json()["retry_schedule"] is None


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"retry_schedule": ["5 minutes"]}, "retry_schedule[0]"),
        ({"retry_schedule": "5m"}, "retry_schedule"),
        ({"retry_schedule": ["1s"] * 25}, "retry_schedule"),
        ({"url": "http://example.com/x"}, "url"),
    ],
)
def test_a_bad_endpoint_update_names_the_field(product, receiver, product_client, body, field):
    endpoint = factories.make_endpoint(product, receiver.url())
    response = product_client.patch(f"/api/v1/webhooks/{endpoint.id}", body, format="json")
    assert response.status_code == 400, response.json()
    assert field in {f["field"] for f in response.json()["error"]["fields"]}, response.json()


def test_a_schedule_with_an_exponential_back_off_is_refused_naming_the_field(product_client):
    response = product_client.post(
        "/api/v1/workflows",
        {
            "key": "w",
            "steps": [
                {"id": "m", "type": "notify", "channel": "email", "to": "a@example.com", "subject": "s", "body": "b"}
            ],
            "retry": {"schedule": ["5s"], "backoff": "1s"},
        },
        format="json",
    )
    assert response.status_code == 400
    fields = {f["field"]: f["reason"] for f in response.json()["error"]["fields"]}
    assert "A schedule already says" in fields["retry.backoff"]


def test_an_endpoint_is_disabled_only_after_both_the_span_and_the_failed_attempts(product, receiver, settings):
    settings.ROWBELL_ENDPOINT_DISABLE_AFTER_SECONDS = 3600
    settings.ROWBELL_ENDPOINT_DISABLE_AFTER_FAILURES = 3
    endpoint = factories.make_endpoint(product, receiver.url())
    factories.make_workflow(product, key="w", steps=[factories.webhook_step(endpoint)], retry={"schedule": []})
    receiver.default = (503, {}, b"down")

    def deliver():
        [delivery] = Delivery.objects.filter(request=_queued(product))
        deliveries_send(delivery_ids=[delivery.id])
        return WebhookEndpoint.objects.get(id=endpoint.id)

    # A quiet endpoint whose last failure was long ago: one more failure does not disable it.
    WebhookEndpoint.objects.filter(id=endpoint.id).update(
        failing_since=timezone.now() - timedelta(days=3), failed_attempts=1
    )
    assert deliver().enabled and WebhookEndpoint.objects.get(id=endpoint.id).failed_attempts == 2
    disabled = deliver()  # the third failed attempt, past the span
    assert not disabled.enabled and "3 attempts in all" in disabled.disabled_reason


def test_an_endpoint_s_empty_schedule_means_one_attempt(product, receiver, product_client, settings):
    settings.ROWBELL_RETRY_SCHEDULE_WEBHOOK = SVIX
    endpoint = factories.make_endpoint(product, receiver.url())
    assert (
        product_client.patch(f"/api/v1/webhooks/{endpoint.id}", {"retry_schedule": []}, format="json").status_code
        == 200
    )
    factories.make_workflow(product, key="w", steps=[factories.webhook_step(endpoint)])
    [delivery] = Delivery.objects.filter(request=_queued(product))
    assert (delivery.retry_schedule, delivery.max_attempts) == ([], 1)
