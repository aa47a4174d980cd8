import json
from datetime import timedelta

import pytest
from django.utils import timezone
from standardwebhooks.webhooks import Webhook

from apps.audit.models import AuditEvent
from apps.deliveries.models import Delivery, DeliveryAttempt, DeliveryStatus, WebhookEndpoint
from apps.deliveries.services import deliveries_dispatch_due, deliveries_reconcile, deliveries_send
from apps.runs.models import TriggerRequest
from apps.runs.services import request_start, runs_execute, trigger_create
from tests import factories

pytestmark = pytest.mark.django_db


@pytest.fixture
def setup(product, receiver):
    endpoint = factories.make_endpoint(product, receiver.url())
    factories.make_workflow(product, key="w", steps=[factories.webhook_step(endpoint)])
    return product, endpoint


def _trigger_and_start(product, recipients=("u1",), data=None):
    request_id, _ = trigger_create(
        tenant=factories.tenant_of(product),
        workflow="w",
        recipients=[{"id": r} for r in recipients],
        data=data or {"order": 7},
        priority="normal",
    )
    request = TriggerRequest.objects.get(id=request_id)
    # Large fan-outs are handed to workers; run them here as a worker would (already-run ones are skipped).
    runs_execute(run_ids=request_start(request_id=request.id))
    return request


def _queued(product, recipients=("u1",)):
    """A request whose webhooks wait in the queue for the sending workers: held for review (the workflow is
    sandboxed while they are made), then released, so its run's own task did not send them."""
    from apps.deliveries.services import deliveries_release
    from apps.workflows.models import Workflow

    Workflow.objects.filter(product=product, key="w").update(sandbox=True)
    request = _trigger_and_start(product, recipients)
    Workflow.objects.filter(product=product, key="w").update(sandbox=False)
    held = list(Delivery.objects.filter(request=request).values_list("message_id", flat=True))
    assert deliveries_release(product_id=product.id, message_ids=held, actor="test") and len(held) == len(recipients)
    return request


def _due_now(delivery):
    Delivery.objects.filter(id=delivery.id).update(next_attempt_at=timezone.now())


def test_webhook_is_signed_per_standard_webhooks_and_recorded(setup, receiver):
    product, endpoint = setup
    request = _trigger_and_start(product)
    delivery = Delivery.objects.get(request=request)
    # Sent by the task that started the request, once written: nothing is left for another task.
    assert deliveries_send(delivery_ids=[delivery.id]) == 0 and len(receiver.requests) == 1

    sent = receiver.requests[0]
    payload = Webhook(WebhookEndpoint.objects.get(id=endpoint.id).secret).verify(sent["body"], sent["headers"])
    assert sent["headers"]["webhook-id"] == delivery.message_id
    assert payload["type"] == "workflow.notification"
    assert payload["data"]["data"] == {"order": 7} and payload["data"]["recipient"] == {"id": "u1"}
    assert payload["data"]["request_id"] == str(request.id)
    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.DELIVERED and delivery.attempt_count == 1
    attempt = DeliveryAttempt.objects.get(delivery=delivery)
    assert attempt.status_code == 200 and attempt.outcome == "success" and attempt.response_excerpt == "ok"
    assert AuditEvent.objects.filter(action="delivery.delivered", target_id=delivery.message_id).exists()


def test_failures_retry_with_backoff_and_a_stable_webhook_id(setup, receiver):
    product, _ = setup
    receiver.answer(500, (503, {"Retry-After": "30"}, b"busy"))
    delivery = Delivery.objects.get(request=_trigger_and_start(product))

    before = timezone.now()
    deliveries_send(delivery_ids=[delivery.id])
    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.QUEUED and delivery.last_error == "HTTP 500"
    assert delivery.next_attempt_at > before

    _due_now(delivery)
    deliveries_send(delivery_ids=[delivery.id])
    delivery.refresh_from_db()
    # Retry-After: 30 is honoured as a floor on the back-off.
    assert delivery.next_attempt_at >= timezone.now() + timedelta(seconds=29)

    _due_now(delivery)
    deliveries_send(delivery_ids=[delivery.id])
    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.DELIVERED and delivery.attempt_count == 3
    ids = {r["headers"]["webhook-id"] for r in receiver.requests}
    assert ids == {delivery.message_id}
    codes = list(DeliveryAttempt.objects.filter(delivery=delivery).values_list("number", "status_code"))
    assert codes == [(1, 500), (2, 503), (3, 200)]
    assert AuditEvent.objects.filter(action="delivery.retry_scheduled", target_id=delivery.message_id).count() == 2


def test_gives_up_after_the_workflows_attempts_and_fails_the_run(product, receiver):
    endpoint = factories.make_endpoint(product, receiver.url())
    factories.make_workflow(
        product, key="w", steps=[factories.webhook_step(endpoint)], retry={"max_attempts": 2, "backoff": "1s"}
    )
    receiver.default = (500, {}, b"down")
    delivery = Delivery.objects.get(request=_trigger_and_start(product))
    delivery.refresh_from_db()
    for _ in range(2):
        _due_now(delivery)
        deliveries_send(delivery_ids=[delivery.id])
    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.FAILED and delivery.attempt_count == 2
    failed = AuditEvent.objects.get(action="delivery.failed", target_id=delivery.message_id)
    assert failed.data["reason"] == "gave up after 2 attempts"
    run = delivery.run
    run.refresh_from_db()
    assert run.status == "failed" and "gave up after 2 attempts" in run.error and "HTTP 500" in run.error
    assert run.escalation.notified_at is None  # operators will be told


def test_410_fails_at_once(setup, receiver):
    product, _ = setup
    receiver.answer(410)
    delivery = Delivery.objects.get(request=_trigger_and_start(product))
    deliveries_send(delivery_ids=[delivery.id])
    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.FAILED and delivery.attempt_count == 1
    assert DeliveryAttempt.objects.get(delivery=delivery).permanent is True


def test_only_200_counts_unless_the_endpoint_accepts_any_2xx(setup, receiver):
    product, endpoint = setup
    receiver.answer(204)
    delivery = Delivery.objects.get(request=_trigger_and_start(product))
    deliveries_send(delivery_ids=[delivery.id])
    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.QUEUED and "only 200" in delivery.last_error

    WebhookEndpoint.objects.filter(id=endpoint.id).update(accept_any_2xx=True)
    receiver.answer(204)
    _due_now(delivery)
    deliveries_send(delivery_ids=[delivery.id])
    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.DELIVERED


def test_redirects_are_not_followed(setup, receiver):
    product, _ = setup
    receiver.answer((302, {"Location": receiver.url("/elsewhere")}, b""))
    delivery = Delivery.objects.get(request=_trigger_and_start(product))
    deliveries_send(delivery_ids=[delivery.id])
    delivery.refresh_from_db()
    assert [r["path"] for r in receiver.requests] == ["/hook"]
    assert delivery.status == DeliveryStatus.QUEUED and "redirects are not followed" in delivery.last_error


def test_a_delivery_is_claimed_once(setup, receiver):
    product, _ = setup
    delivery = Delivery.objects.get(request=_queued(product))
    assert deliveries_send(delivery_ids=[delivery.id]) == 1
    assert deliveries_send(delivery_ids=[delivery.id]) == 0
    assert len(receiver.requests) == 1


def test_batches_are_sent_concurrently_and_recorded_in_bulk(setup, receiver):
    product, _ = setup
    request = _trigger_and_start(product, recipients=[f"u{i}" for i in range(30)])
    ids = list(Delivery.objects.filter(request=request).values_list("id", flat=True))
    assert len(ids) == 30
    # The batch of runs sent its deliveries itself, concurrently: nothing is left for another task.
    assert deliveries_send(delivery_ids=ids) == 0
    assert Delivery.objects.filter(request=request, status=DeliveryStatus.DELIVERED).count() == 30
    assert DeliveryAttempt.objects.filter(delivery__request=request).count() == 30
    assert len({json.loads(r["body"])["data"]["recipient"]["id"] for r in receiver.requests}) == 30


def test_unreachable_receiver_is_a_transient_failure(setup, receiver):
    product, endpoint = setup
    receiver.close()
    delivery = Delivery.objects.get(request=_trigger_and_start(product))
    deliveries_send(delivery_ids=[delivery.id])
    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.QUEUED and "Cannot connect" in delivery.last_error


def test_private_destinations_are_refused_at_save_time(product_client):
    for url in (
        "http://10.0.0.5/hook",
        "http://169.254.169.254/latest",
        "http://[::ffff:192.168.1.1]/x",
        "ftp://example.com/x",
    ):
        response = product_client.post("/api/v1/webhooks", {"url": url}, format="json")
        assert response.status_code == 400, url
        assert response.json()["error"]["fields"][0]["field"] == "url"


def test_a_name_resolving_to_a_private_address_is_refused_at_connect_time(product, receiver, settings):
    endpoint = factories.make_endpoint(product, f"http://localhost:{receiver.port}/hook")
    factories.make_workflow(product, key="w", steps=[factories.webhook_step(endpoint)])
    settings.ROWBELL_OUTBOUND_ALLOW = []  # loopback is no longer opened for tests
    delivery = Delivery.objects.get(request=_trigger_and_start(product))
    deliveries_send(delivery_ids=[delivery.id])
    delivery.refresh_from_db()
    assert receiver.requests == []
    assert delivery.status == DeliveryStatus.FAILED and "private or reserved" in delivery.last_error


def test_webhook_creation_shows_the_secret_once(product_client, receiver):
    created = product_client.post("/api/v1/webhooks", {"url": receiver.url()}, format="json").json()
    assert created["secret"].startswith("whsec_")
    fetched = product_client.get(f"/api/v1/webhooks/{created['id']}").json()
    assert "secret" not in fetched
    # Encrypted at rest: the column does not hold the secret.
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT secret FROM deliveries_webhookendpoint WHERE id = %s", [created["id"]])
        stored = cursor.fetchone()[0]
    assert created["secret"] not in stored and stored.startswith("gAAAA")


def test_dispatch_due_hints_retries_and_lost_work_once(setup, receiver, settings):
    product, _ = setup
    delivery = Delivery.objects.get(request=_queued(product))
    # Just created: its hint is fresh, nothing to dispatch.
    assert deliveries_dispatch_due() == 0
    # Its hint is older than the requeue threshold (e.g. Redis lost it): dispatched again, once.
    Delivery.objects.filter(id=delivery.id).update(enqueued_at=timezone.now() - timedelta(minutes=5))
    assert deliveries_dispatch_due() == 1
    assert deliveries_dispatch_due() == 0


def test_reconcile_requeues_deliveries_whose_worker_died(setup, receiver):
    product, _ = setup
    delivery = Delivery.objects.get(request=_queued(product))
    Delivery.objects.filter(id=delivery.id).update(
        status=DeliveryStatus.SENDING, attempt_count=1, lease_until=timezone.now() - timedelta(seconds=1)
    )
    assert deliveries_reconcile() == 1
    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.QUEUED
    assert DeliveryAttempt.objects.get(delivery=delivery).outcome == "unknown"
    deliveries_send(delivery_ids=[delivery.id])
    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.DELIVERED and delivery.attempt_count == 2


def test_a_send_that_outlives_its_lease_keeps_its_real_outcome_and_is_not_sent_again(setup, receiver, monkeypatch):
    from apps.deliveries.channels import channel_get

    product, _ = setup
    request = _queued(product, recipients=["a", "b"])
    ids = list(Delivery.objects.filter(request=request).values_list("id", flat=True))
    webhook = channel_get("webhook")
    send_many = webhook.send_many

    def slow_to_record(deliveries):
        outcomes = send_many(deliveries)  # sent, but the worker is slow to record it...
        Delivery.objects.filter(id__in=ids).update(lease_until=timezone.now() - timedelta(seconds=1))
        assert deliveries_reconcile() == 2  # ...so the reconciler gives the deliveries back to the queue
        return outcomes  # then the results arrive

    monkeypatch.setattr(webhook, "send_many", slow_to_record)
    deliveries_send(delivery_ids=ids)
    monkeypatch.undo()

    assert set(Delivery.objects.filter(id__in=ids).values_list("status", flat=True)) == {DeliveryStatus.DELIVERED}
    assert list(DeliveryAttempt.objects.filter(delivery_id__in=ids).values_list("outcome", flat=True)) == [
        "success",
        "success",
    ]
    assert deliveries_send(delivery_ids=ids) == 0 and len(receiver.requests) == 2


def test_a_trickling_or_endless_response_body_cannot_hold_a_worker(settings):
    import socket
    import threading
    import time as _time

    from apps.deliveries import outbound

    settings.ROWBELL_HTTP_TIMEOUT = 1.0
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4)
    stop = threading.Event()

    def serve():
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                return
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100000000\r\n\r\n")
            try:
                while not stop.is_set():  # one byte every 200 ms, for ever
                    conn.sendall(b"x")
                    _time.sleep(0.2)
            except OSError:
                pass
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    answers = []
    caller = threading.Thread(
        target=lambda: answers.append(outbound.post(f"http://127.0.0.1:{server.getsockname()[1]}/hook", b"{}", {})),
        daemon=True,
    )
    try:
        caller.start()
        caller.join(60)  # a liveness guard, not a speed claim: unbounded, this would never return
    finally:
        stop.set()
        server.close()
    assert not caller.is_alive() and answers, "post() kept reading a body that never ends"
    assert answers[0].status == 200 and answers[0].excerpt.startswith("x")


def test_deliveries_queued_before_an_endpoint_was_disabled_are_skipped(setup, receiver):
    product, endpoint = setup
    delivery = Delivery.objects.get(request=_queued(product))
    WebhookEndpoint.objects.filter(id=endpoint.id).update(enabled=False)
    assert deliveries_send(delivery_ids=[delivery.id]) == 0
    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.SKIPPED and delivery.last_error == "The webhook endpoint is disabled."
    assert receiver.requests == []
