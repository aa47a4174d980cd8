"""Answers from outside that cannot be stored or parsed: a receiver's body with a NUL byte, every form of
HTTP date in Retry-After, an error while reading one answer of a batch, and a delivery whose attempt outlives
its lease. Each is one delivery's outcome, recorded; none stops the batch or sends a message more times than
the delivery's max_attempts."""

from datetime import UTC, datetime, timedelta

import pytest
from django.utils import timezone

from apps.deliveries import outbound
from apps.deliveries.models import Delivery, DeliveryAttempt, DeliveryStatus
from apps.deliveries.services import deliveries_reconcile, deliveries_send
from apps.deliveries.services import sending as sending_module
from apps.runs.models import Escalation, RunStatus
from tests import factories

from .test_webhook_delivery import _due_now, _queued

pytestmark = pytest.mark.django_db


@pytest.fixture
def setup(product, receiver):
    endpoint = factories.make_endpoint(product, receiver.url())
    factories.make_workflow(product, key="w", steps=[factories.webhook_step(endpoint)])
    return product, endpoint


def _two_queued(product, busy, fine) -> dict:
    """One queued webhook for each endpoint, claimable in one batch: {endpoint id: delivery id}."""
    from apps.deliveries.services import deliveries_release
    from apps.runs.models import TriggerRequest
    from apps.runs.services import request_start, runs_execute, trigger_create

    held = []
    for key, endpoint in (("busy", busy), ("fine", fine)):
        factories.make_workflow(product, key=key, steps=[factories.webhook_step(endpoint)], sandbox=True)
        request_id, _ = trigger_create(
            tenant=factories.tenant_of(product), workflow=key, recipients=[{"id": "u1"}], data={}, priority="normal"
        )
        runs_execute(run_ids=request_start(request_id=TriggerRequest.objects.get(id=request_id).id))
        held += list(Delivery.objects.filter(request_id=request_id).values_list("message_id", flat=True))
    assert deliveries_release(product_id=product.id, message_ids=held, actor="test")
    return dict(Delivery.objects.filter(message_id__in=held).values_list("endpoint_id", "id"))


def test_a_200_whose_body_holds_a_nul_byte_is_delivered_once_and_its_excerpt_kept_readable(setup, receiver):
    product, _ = setup
    receiver.default = (200, {}, b"ok\x00then \xed\xa0\xbd more")  # a NUL and an encoded lone surrogate
    [delivery] = Delivery.objects.filter(request=_queued(product))
    assert deliveries_send(delivery_ids=[delivery.id]) == 1

    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.DELIVERED and len(receiver.requests) == 1
    attempt = DeliveryAttempt.objects.get(delivery=delivery)
    assert attempt.response_excerpt.startswith("ok\\u0000then ")


def _date(moment: datetime, form: str) -> str:
    return {
        "imf": moment.strftime("%a, %d %b %Y %H:%M:%S GMT"),
        "rfc850": moment.strftime("%A, %d-%b-%y %H:%M:%S GMT"),
        "asctime": moment.strftime("%a %b %d %H:%M:%S %Y").replace(" 0", "  "),
        "minus-zero": moment.strftime("%a, %d %b %Y %H:%M:%S -0000"),
        "numeric-zone": (moment + timedelta(hours=1)).strftime("%a, %d %b %Y %H:%M:%S +0100"),
    }[form]


@pytest.mark.parametrize("form", ["imf", "rfc850", "asctime", "minus-zero", "numeric-zone"])
def test_every_form_of_http_date_in_retry_after_is_read(form):
    moment = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=300)
    seconds = outbound.retry_after_seconds(_date(moment, form))
    assert seconds is not None and 290 <= seconds <= 301, seconds


@pytest.mark.parametrize("value", ["soon", "Mon, 99 Foo 2026 99:99:99 GMT", "１２", "-5", "", None])
def test_an_unreadable_retry_after_is_ignored(value):
    assert outbound.retry_after_seconds(value) is None


def test_an_asctime_retry_after_is_honoured_and_a_healthy_endpoint_in_the_same_batch_gets_its_message_once(
    product, receiver
):
    from tests.conftest import Receiver

    healthy = Receiver()
    try:
        busy = factories.make_endpoint(product, receiver.url())
        fine = factories.make_endpoint(product, healthy.url())
        moment = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=600)
        receiver.default = (503, {"Retry-After": _date(moment, "asctime")}, b"busy")
        ids = _two_queued(product, busy, fine)
        assert deliveries_send(delivery_ids=list(ids.values())) == 2

        by_endpoint = {d.endpoint_id: d for d in Delivery.objects.filter(id__in=ids.values())}
        assert by_endpoint[fine.id].status == DeliveryStatus.DELIVERED and len(healthy.requests) == 1
        retried = by_endpoint[busy.id]
        assert retried.status == DeliveryStatus.QUEUED and retried.last_error == "HTTP 503"
        assert retried.next_attempt_at >= timezone.now() + timedelta(seconds=590)  # the Retry-After was honoured
    finally:
        healthy.close()


def test_an_error_reading_one_answer_fails_that_delivery_only(product, receiver, monkeypatch):
    from tests.conftest import Receiver

    real = outbound.retry_after_seconds

    def broken(value):
        if value == "explode":
            raise TypeError("can't subtract offset-naive and offset-aware datetimes")
        return real(value)

    monkeypatch.setattr(outbound, "retry_after_seconds", broken)
    healthy = Receiver()
    try:
        busy = factories.make_endpoint(product, receiver.url())
        fine = factories.make_endpoint(product, healthy.url())
        receiver.default = (503, {"Retry-After": "explode"}, b"busy")
        ids = _two_queued(product, busy, fine)
        assert deliveries_send(delivery_ids=list(ids.values())) == 2

        by_endpoint = {d.endpoint_id: d for d in Delivery.objects.filter(id__in=ids.values())}
        assert by_endpoint[fine.id].status == DeliveryStatus.DELIVERED and len(healthy.requests) == 1
        failed = by_endpoint[busy.id]
        assert failed.status == DeliveryStatus.QUEUED and "could not read the answer (TypeError" in failed.last_error
        assert DeliveryAttempt.objects.filter(delivery=failed, outcome="failure").count() == 1
    finally:
        healthy.close()


def test_a_delivery_whose_outcome_cannot_be_recorded_reaches_its_receiver_at_most_max_attempts_times(
    product, receiver, monkeypatch
):
    """Whatever stops the outcome from being recorded (here the record itself fails, as an unstorable answer
    once made it), each lease that expires counts as an attempt, and the last one fails the delivery."""
    endpoint = factories.make_endpoint(product, receiver.url())
    factories.make_workflow(product, key="w", steps=[factories.webhook_step(endpoint)], retry={"max_attempts": 3})

    def unrecordable(outcomes):
        raise RuntimeError("the attempt cannot be written")

    monkeypatch.setattr(sending_module, "_record", unrecordable)
    [delivery] = Delivery.objects.filter(request=_queued(product))
    for _ in range(6):
        _due_now(delivery)
        try:
            deliveries_send(delivery_ids=[delivery.id])
        except RuntimeError:
            pass
        Delivery.objects.filter(id=delivery.id).update(lease_until=timezone.now() - timedelta(seconds=1))
        deliveries_reconcile()

    delivery.refresh_from_db()
    assert len(receiver.requests) == 3  # max_attempts, not one per lease
    assert {r["headers"]["webhook-id"] for r in receiver.requests} == {delivery.message_id}
    assert delivery.status == DeliveryStatus.FAILED and delivery.attempt_count == 3
    assert list(DeliveryAttempt.objects.filter(delivery=delivery).values_list("number", "outcome")) == [
        (1, "unknown"),
        (2, "unknown"),
        (3, "unknown"),
    ]
    run = delivery.run
    run.refresh_from_db()
    assert run.status == RunStatus.FAILED and "gave up after 3 attempts" in run.error
    assert Escalation.objects.filter(run=run).exists()


def test_a_success_that_comes_back_after_the_reconciler_failed_its_attempt_is_recorded(product, receiver):
    """The last allowed attempt outlived its lease: the reconciler failed the delivery. Its send then returns
    a 200 after all: the delivery is delivered, as the receiver saw it."""
    from apps.deliveries.services import sending

    endpoint = factories.make_endpoint(product, receiver.url())
    factories.make_workflow(product, key="w", steps=[factories.webhook_step(endpoint)], retry={"schedule": []})
    [delivery] = Delivery.objects.filter(request=_queued(product))
    [claimed] = sending._claim([delivery.id])
    outcomes = sending._send([claimed])  # the receiver has it; the worker is slow to record it
    Delivery.objects.filter(id=delivery.id).update(lease_until=timezone.now() - timedelta(seconds=1))
    deliveries_reconcile()
    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.FAILED  # it gave up: the outcome was unknown

    sending._record(outcomes)
    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.DELIVERED and len(receiver.requests) == 1
    assert list(DeliveryAttempt.objects.filter(delivery=delivery).values_list("outcome", flat=True)) == ["success"]
