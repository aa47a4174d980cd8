"""Webhook endpoints operators can trust: secret rotation, 410 and automatic disabling, replay."""

from datetime import timedelta

import pytest
from django.core import mail
from django.utils import timezone
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from apps.audit.models import AuditEvent
from apps.deliveries.models import ENDPOINT_DISABLED, Delivery, DeliveryStatus, WebhookEndpoint
from apps.deliveries.services import deliveries_send, webhook_endpoint_disabled_notify
from apps.runs.models import TriggerRequest
from apps.runs.services import request_start, runs_execute, trigger_create
from tests import factories

pytestmark = pytest.mark.django_db


@pytest.fixture
def setup(product, receiver):
    endpoint = factories.make_endpoint(product, receiver.url())
    factories.make_workflow(product, key="w", steps=[factories.webhook_step(endpoint)])
    return product, endpoint


def _deliver(product, order=7) -> Delivery:
    """Trigger the workflow for one recipient and make one attempt at its webhook."""
    request_id, _ = trigger_create(
        tenant=factories.tenant_of(product),
        workflow="w",
        recipients=[{"id": "u1"}],
        data={"order": order},
        priority="normal",
    )
    runs_execute(run_ids=request_start(request_id=TriggerRequest.objects.get(id=request_id).id))
    delivery = Delivery.objects.get(request_id=request_id)
    deliveries_send(delivery_ids=[delivery.id])
    delivery.refresh_from_db()
    return delivery


def _endpoint(endpoint) -> WebhookEndpoint:
    return WebhookEndpoint.objects.get(id=endpoint.id)


def test_a_rotated_secret_and_the_previous_one_both_sign_during_the_overlap(setup, receiver, product_client):
    product, endpoint = setup
    old = _endpoint(endpoint).secret
    response = product_client.post(
        f"/api/v1/webhooks/{endpoint.id}/rotate-secret", {"overlap_seconds": 3600}, format="json"
    )
    assert response.status_code == 200
    new = response.json()["secret"]
    assert new.startswith("whsec_") and new != old
    assert AuditEvent.objects.filter(action="webhook.secret_rotated", target_id=str(endpoint.id)).exists()

    _deliver(product)
    sent = receiver.requests[-1]
    assert len(sent["headers"]["webhook-signature"].split(" ")) == 2
    for secret in (old, new):  # a receiver on either secret verifies the message
        assert Webhook(secret).verify(sent["body"], sent["headers"])["data"]["data"] == {"order": 7}

    # The overlap ends: only the new secret signs.
    WebhookEndpoint.objects.filter(id=endpoint.id).update(previous_secret_until=timezone.now())
    _deliver(product, order=8)
    sent = receiver.requests[-1]
    assert Webhook(new).verify(sent["body"], sent["headers"])["data"]["data"] == {"order": 8}
    with pytest.raises(WebhookVerificationError):
        Webhook(old).verify(sent["body"], sent["headers"])
    # The secret is never shown again.
    assert "secret" not in product_client.get(f"/api/v1/webhooks/{endpoint.id}").json()


def test_rotation_refuses_an_overlap_out_of_range(setup, product_client):
    _, endpoint = setup
    response = product_client.post(
        f"/api/v1/webhooks/{endpoint.id}/rotate-secret", {"overlap_seconds": 30 * 86400}, format="json"
    )
    assert response.status_code == 400
    assert response.json()["error"]["fields"][0]["field"] == "overlap_seconds"


def test_410_disables_the_endpoint_and_operators_are_told(setup, receiver, settings):
    product, endpoint = setup
    settings.ADMINS = [("Ops", "ops@example.com")]
    receiver.answer(410)
    delivery = _deliver(product)
    assert delivery.status == DeliveryStatus.FAILED
    endpoint = _endpoint(endpoint)
    assert not endpoint.enabled and endpoint.disabled_reason == "The endpoint answered 410 Gone."
    audit = AuditEvent.objects.get(action="webhook.disabled", target_id=str(endpoint.id))
    assert audit.actor == "rowbell" and audit.data["reason"] == "The endpoint answered 410 Gone."

    webhook_endpoint_disabled_notify(endpoint_id=endpoint.id)  # the task the disabling queued
    assert len(mail.outbox) == 1 and endpoint.url_masked in mail.outbox[0].subject
    assert "410 Gone" in mail.outbox[0].body and mail.outbox[0].to == ["ops@example.com"]

    # Nothing more is sent to it: the next message is skipped with the reason, kept for a replay.
    later = _deliver(product, order=8)
    assert later.status == DeliveryStatus.SKIPPED and later.last_error == ENDPOINT_DISABLED
    assert len(receiver.requests) == 1


def test_an_endpoint_failing_for_longer_than_the_span_is_disabled(setup, receiver, settings):
    product, endpoint = setup
    settings.ROWBELL_ENDPOINT_DISABLE_AFTER_SECONDS = 3600
    receiver.answer(500, 200, 500)
    _deliver(product)
    first_failure = _endpoint(endpoint).failing_since
    assert first_failure is not None and _endpoint(endpoint).enabled
    _deliver(product)  # a success ends the streak
    assert _endpoint(endpoint).failing_since is None
    _deliver(product)  # failing again, from now: not long enough
    assert _endpoint(endpoint).enabled

    WebhookEndpoint.objects.filter(id=endpoint.id).update(failing_since=timezone.now() - timedelta(hours=2))
    receiver.answer(503)
    _deliver(product)
    endpoint = _endpoint(endpoint)
    assert not endpoint.enabled and endpoint.disabled_reason.startswith("Every attempt failed since ")
    assert "longer than 1 hours" in endpoint.disabled_reason


def test_enabling_offers_to_replay_what_failed_meanwhile_with_the_original_ids(setup, receiver, product_client):
    product, endpoint = setup
    receiver.answer(410)
    failed = _deliver(product)
    skipped = [_deliver(product, order=n) for n in (8, 9)]
    assert {d.status for d in skipped} == {DeliveryStatus.SKIPPED}

    response = product_client.post(f"/api/v1/webhooks/{endpoint.id}/enable", {}, format="json")
    assert response.status_code == 200
    body = response.json()
    assert body["enabled"] and body["disabled_reason"] == ""
    assert body["replay"]["replayable"] == 3 and body["replay"]["replayed"] == 0
    assert len(receiver.requests) == 1  # an offer, nothing sent yet

    offer_since = body["replay"]["since"]

    # Disabled again by an operator; one more message is skipped; enabled with the replay this time:
    # what was skipped since this disabling goes out.
    product_client.post(f"/api/v1/webhooks/{endpoint.id}/disable")
    another = _deliver(product, order=10)
    response = product_client.post(f"/api/v1/webhooks/{endpoint.id}/enable", {"replay": True}, format="json")
    assert response.json()["replay"]["replayed"] == 1
    # The first offer, declined then, is still open through the range replay.
    response = product_client.post(f"/api/v1/webhooks/{endpoint.id}/replay", {"since": offer_since}, format="json")
    assert len(response.json()["replayed"]) == 3

    everything = [failed, *skipped, another]
    deliveries_send(delivery_ids=[d.id for d in everything])
    ids = [r["headers"]["webhook-id"] for r in receiver.requests[1:]]
    assert sorted(ids) == sorted(d.message_id for d in everything)
    secret = _endpoint(endpoint).secret
    assert sorted(
        Webhook(secret).verify(r["body"], r["headers"])["data"]["data"]["order"] for r in receiver.requests[1:]
    ) == [7, 8, 9, 10]
    assert set(Delivery.objects.filter(id__in=[d.id for d in everything]).values_list("status", flat=True)) == {
        DeliveryStatus.DELIVERED
    }
    assert AuditEvent.objects.filter(action="delivery.replayed").count() == 4


def test_replay_one_delivery_or_an_endpoints_failures_in_a_range(setup, receiver, product_client):
    product, endpoint = setup
    delivered = _deliver(product)
    response = product_client.post(
        "/api/v1/deliveries/replay", {"ids": [delivered.message_id, "msg_nope"]}, format="json"
    )
    assert response.status_code == 200
    assert response.json() == {
        "replayed": [delivered.message_id],
        "not_replayed": {"msg_nope": "No webhook delivery with this id."},
    }
    deliveries_send(delivery_ids=[delivered.id])
    assert [r["headers"]["webhook-id"] for r in receiver.requests] == [delivered.message_id] * 2

    receiver.answer(400, 400)
    old, recent = _deliver(product, order=1), _deliver(product, order=2)
    Delivery.objects.filter(id__in=[old.id, recent.id]).update(max_attempts=1)
    for d in (old, recent):  # both fail for good now
        Delivery.objects.filter(id=d.id).update(status=DeliveryStatus.FAILED)
    Delivery.objects.filter(id=old.id).update(completed_at=timezone.now() - timedelta(days=2))
    Delivery.objects.filter(id=recent.id).update(completed_at=timezone.now() - timedelta(hours=1))
    since = (timezone.now() - timedelta(days=1)).isoformat()
    response = product_client.post(f"/api/v1/webhooks/{endpoint.id}/replay", {"since": since}, format="json")
    assert response.json()["replayed"] == [recent.message_id]

    response = product_client.post(
        f"/api/v1/webhooks/{endpoint.id}/replay", {"since": since, "until": since}, format="json"
    )
    assert response.status_code == 400 and response.json()["error"]["fields"][0]["field"] == "until"


def test_a_delivery_still_in_progress_is_not_replayed(setup, receiver, product_client):
    product, _ = setup
    receiver.answer(503)  # its first attempt: queued again for a retry
    request_id, _ = trigger_create(
        tenant=factories.tenant_of(product), workflow="w", recipients=[{"id": "u1"}], data={}, priority="normal"
    )
    request_start(request_id=request_id)
    queued = Delivery.objects.get(request_id=request_id)
    response = product_client.post("/api/v1/deliveries/replay", {"ids": [queued.message_id]}, format="json")
    assert response.json() == {"replayed": [], "not_replayed": {queued.message_id: "The delivery is still queued."}}


def test_a_replay_that_names_nothing_is_refused_and_replays_nothing(setup, receiver):
    from apps.core.exceptions import InvalidInput
    from apps.deliveries.services import deliveries_replay

    product, _ = setup
    request_id, _ = trigger_create(
        tenant=factories.tenant_of(product), workflow="w", recipients=[{"id": "u1"}], data={}, priority="normal"
    )
    request_start(request_id=request_id)
    Delivery.objects.filter(request_id=request_id).update(status=DeliveryStatus.FAILED, endpoint=None)
    with pytest.raises(InvalidInput):
        deliveries_replay(product_id=product.id, actor="test")
    assert Delivery.objects.get(request_id=request_id).status == DeliveryStatus.FAILED


def test_special_ranges_are_refused_at_save_time(product_client):
    for url in (
        "http://100.64.0.1/hook",
        "http://[64:ff9b::a00:1]/hook",
        "http://[::ffff:10.0.0.1]/hook",
        "http://[fe80::1]/hook",
        "http://0.0.0.0/hook",
    ):
        response = product_client.post("/api/v1/webhooks", {"url": url}, format="json")
        assert response.status_code == 400, url
        field = response.json()["error"]["fields"][0]
        assert field["field"] == "url" and "private or reserved" in str(field), url


def test_a_name_is_checked_on_the_address_it_resolves_to_when_connecting(product, receiver, monkeypatch):
    import socket

    endpoint = factories.make_endpoint(product, f"http://hooks.example.test:{receiver.port}/hook")
    factories.make_workflow(product, key="w", steps=[factories.webhook_step(endpoint)])
    real = socket.getaddrinfo

    def resolve(host, *args, **kwargs):  # the name now points into the private network (DNS rebinding)
        if host == "hooks.example.test":
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.1.2.3", args[0] if args else 0))]
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", resolve)
    delivery = _deliver(product)
    assert delivery.status == DeliveryStatus.FAILED  # refused for good, not retried
    assert delivery.last_error.startswith("hooks.example.test resolves to a private or reserved address (10.1.2.3);")
    assert "ROWBELL_OUTBOUND_ALLOW" in delivery.last_error
    assert receiver.requests == []


def test_every_change_of_status_is_an_event_with_its_time_and_source(setup, receiver, product_client):
    product, _ = setup
    receiver.answer(503)
    delivery = _deliver(product)  # written sending by the run's task, then queued again for a retry
    Delivery.objects.filter(id=delivery.id).update(next_attempt_at=timezone.now())
    deliveries_send(delivery_ids=[delivery.id])  # sending, delivered
    product_client.post("/api/v1/deliveries/replay", {"ids": [delivery.message_id]}, format="json")

    response = product_client.get(f"/api/v1/deliveries/{delivery.message_id}")
    assert response.status_code == 200
    body = response.json()
    assert [(e["status"], e["source"]) for e in body["events"]] == [
        ("sending", "rowbell"),
        ("queued", "rowbell"),
        ("sending", "rowbell"),
        ("delivered", "rowbell"),
        ("queued", "operator"),
    ]
    assert body["events"][1]["detail"]["error"] == "HTTP 503" and "retry_at" in body["events"][1]["detail"]
    assert body["events"][3]["detail"] == {"status_code": 200}
    assert body["events"][4]["detail"]["replay_of"] == "delivered"
    times = [e["at"] for e in body["events"]]
    assert times == sorted(times)
    assert [(a["number"], a["status_code"]) for a in body["attempt_log"]] == [(1, 503), (2, 200)]
    assert product_client.get("/api/v1/deliveries/msg_unknown").status_code == 404


def test_a_url_that_cannot_be_used_fails_only_its_own_delivery(product, receiver, product_client):
    from apps.deliveries import outbound

    good = outbound.Post(receiver.url("/ok"), b"{}", {})
    answers = outbound.post_many(
        [outbound.Post("https://x.example.com:99999/", b"{}", {}), good, outbound.Post("http://2130706433/", b"{}", {})]
    )
    assert isinstance(answers[0], outbound.OutboundError) and answers[0].permanent
    assert answers[1].status == 200 and len(receiver.requests) == 1
    assert isinstance(answers[2], outbound.DestinationRefused)
    response = product_client.post("/api/v1/webhooks", {"url": "http://127.1/hook"}, format="json")
    assert response.status_code == 400 and response.json()["error"]["fields"][0]["field"] == "url"


def test_replaying_an_earlier_step_does_not_move_a_run_waiting_on_a_later_one(
    product, receiver, product_client, settings
):
    from apps.runs.models import Run, RunStatus
    from tests.conftest import free_port

    # The mail server is down: the email step's delivery waits for a retry, and its run with it.
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT, settings.EMAIL_TIMEOUT = "127.0.0.1", free_port(), 2
    endpoint = factories.make_endpoint(product, receiver.url())
    factories.make_workflow(
        product,
        key="w",
        steps=[factories.webhook_step(endpoint), factories.email_step(subject="Shipped", body="Order")],
    )
    request_id, _ = trigger_create(
        tenant=factories.tenant_of(product),
        workflow="w",
        recipients=[{"id": "u1", "email": "u1@example.com"}],
        data={"order": 1},
        priority="normal",
    )
    runs_execute(run_ids=request_start(request_id=TriggerRequest.objects.get(id=request_id).id))
    hook = Delivery.objects.get(request_id=request_id, step_id="hook")
    deliveries_send(delivery_ids=[hook.id])
    runs_execute(run_ids=list(Run.objects.filter(request_id=request_id).values_list("id", flat=True)))
    run = Run.objects.get(request_id=request_id)
    mail_delivery = Delivery.objects.get(request_id=request_id, step_id="mail")
    assert (run.status, run.waiting_on, mail_delivery.status) == (RunStatus.WAITING, "delivery", "queued")

    product_client.post("/api/v1/deliveries/replay", {"ids": [hook.message_id]}, format="json")
    deliveries_send(delivery_ids=[hook.id])  # the replayed webhook is delivered again...
    run.refresh_from_db()
    assert (run.status, run.waiting_on) == (RunStatus.WAITING, "delivery")  # ...and the run still waits for its email

    # A webhook delivery whose endpoint is gone is answered, not a server error.
    Delivery.objects.filter(id=hook.id).update(endpoint=None)
    response = product_client.post("/api/v1/deliveries/replay", {"ids": [hook.message_id]}, format="json")
    assert response.status_code == 200
    assert response.json()["not_replayed"] == {hook.message_id: "The webhook endpoint no longer exists."}


def test_an_automatic_disabling_queues_the_email_to_operators_as_a_durable_action(setup, receiver, settings, hinted):
    from apps.core.actions import queued_actions_reconcile
    from apps.core.models import QueuedAction

    product, endpoint = setup
    settings.ADMINS = [("Ops", "ops@example.com")]
    settings.ROWBELL_REQUEUE_AFTER_SECONDS = 0
    receiver.answer(410)
    _deliver(product)
    action = QueuedAction.objects.get(name="webhook.disabled_notify")
    assert (action.target_id, action.actor, action.status) == (str(endpoint.id), "rowbell", "queued")
    assert queued_actions_reconcile() == 1  # its hint was never sent (no commit here): sent again
    hinted.run()
    assert len(mail.outbox) == 1 and QueuedAction.objects.get(id=action.id).status == "done"


def test_enabling_with_a_replay_larger_than_a_batch_reports_what_is_left(setup, receiver, monkeypatch):
    from apps.deliveries.services import endpoints as services
    from apps.deliveries.services import webhook_endpoint_disable, webhook_endpoint_enable

    product, endpoint = setup
    receiver.default = (500, {}, b"")
    for order in range(3):
        Delivery.objects.filter(id=_deliver(product, order=order).id).update(
            status=DeliveryStatus.FAILED, completed_at=timezone.now()
        )
    webhook_endpoint_disable(endpoint=endpoint, actor="test")
    monkeypatch.setattr(services, "MAX_REPLAY", 2)
    _, replay = webhook_endpoint_enable(endpoint=_endpoint(endpoint), actor="test", replay=True)
    assert (replay["replayed"], replay["replayable"]) == (2, 1)


def test_a_discarded_delivery_is_not_replayed(product, receiver, product_client):
    endpoint = factories.make_endpoint(product, receiver.url())
    factories.make_workflow(product, key="w", sandbox=True, steps=[factories.webhook_step(endpoint)])
    request_id, _ = trigger_create(
        tenant=factories.tenant_of(product), workflow="w", recipients=[{"id": "u1"}], data={}, priority="normal"
    )
    runs_execute(run_ids=request_start(request_id=request_id))
    held = Delivery.objects.get(request_id=request_id)
    product_client.post("/api/v1/deliveries/discard", {"ids": [held.message_id]}, format="json")
    answer = product_client.post("/api/v1/deliveries/replay", {"ids": [held.message_id]}, format="json").json()
    assert answer["replayed"] == [] and "discarded" in answer["not_replayed"][held.message_id]
    assert Delivery.objects.get(id=held.id).status == DeliveryStatus.DISCARDED and not receiver.requests
