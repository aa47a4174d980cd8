"""End to end with real processes: `celery worker` and `celery beat` against PostgreSQL and Redis."""

import json

import pytest
from standardwebhooks.webhooks import Webhook

from apps.deliveries.models import Delivery, DeliveryAttempt, DeliveryStatus, WebhookEndpoint
from apps.runs.models import TriggerRequest
from tests import factories
from tests.conftest import client_for, wait_until

pytestmark = pytest.mark.e2e


def _setup(receiver, steps_extra=()):
    product, key = factories.make_product()
    endpoint = factories.make_endpoint(product, receiver.url())
    factories.make_workflow(product, key="w", steps=[factories.webhook_step(endpoint), *steps_extra])
    return product, key, endpoint


def test_a_trigger_call_is_delivered_as_a_signed_webhook_and_an_email(processes, receiver, smtp_sink):
    processes.env["TEST_EMAIL_PORT"] = str(smtp_sink.port)
    processes.worker()
    processes.dispatcher()
    product, key, endpoint = _setup(receiver, [factories.email_step(subject="Order {{ data.order }} shipped")])
    client = client_for(key)

    response = client.post(
        "/api/v1/trigger",
        {"workflow": "w", "data": {"order": 42}, "to": [{"id": "u1", "email": "ann@example.com", "name": "Ann"}]},
        format="json",
    )
    assert response.status_code == 202
    request_id = response.json()["request_id"]

    assert receiver.wait_for(1), processes.logs["worker"].read_text()[-3000:]
    hit = receiver.requests[0]
    secret = WebhookEndpoint.objects.get(id=endpoint.id).secret
    payload = Webhook(secret).verify(hit["body"], hit["headers"])
    assert payload["data"]["request_id"] == request_id and payload["data"]["data"] == {"order": 42}

    assert smtp_sink.wait_for(1)
    message = smtp_sink.messages[0]
    assert message["to"] == ["ann@example.com"] and "Subject: Order 42 shipped" in message["data"]

    def completed():
        return client.get(f"/api/v1/requests/{request_id}").json()["status"] == "completed"

    assert wait_until(completed)
    body = client.get(f"/api/v1/requests/{request_id}").json()
    assert sorted((d["channel"], d["status"], d["attempts"]) for d in body["deliveries"]) == [
        ("email", "sent", 1),
        ("webhook", "delivered", 1),
    ]


def test_failed_deliveries_are_retried_by_the_worker_and_beat(processes, receiver):
    processes.worker()
    processes.dispatcher()
    processes.beat()
    receiver.answer(500, (503, {"Retry-After": "1"}, b""))
    product, key, _ = _setup(receiver)
    client_for(key).post("/api/v1/trigger", {"workflow": "w", "to": ["u1"]}, format="json")

    assert receiver.wait_for(3, timeout=40), processes.logs["beat"].read_text()[-2000:]
    assert len({r["headers"]["webhook-id"] for r in receiver.requests}) == 1
    assert wait_until(lambda: Delivery.objects.filter(status=DeliveryStatus.DELIVERED).count() == 1)
    codes = list(DeliveryAttempt.objects.order_by("number").values_list("status_code", flat=True))
    assert codes == [500, 503, 200]


def test_high_priority_is_delivered_before_the_normal_requests_waiting_with_it(processes, receiver):
    # One send at a time, in the order the worker chose, so the order of arrival is the worker's order.
    processes.env["ROWBELL_DELIVERY_CONCURRENCY"] = "1"
    processes.worker(concurrency=1)
    processes.dispatcher()
    product, key, _ = _setup(receiver)
    client = client_for(key)

    # Keep the only worker busy: the first delivery is held by the receiver while a backlog builds up.
    receiver.delay = 3.0
    first = client.post("/api/v1/trigger", {"workflow": "w", "to": ["first"]}, format="json").json()["request_id"]
    assert wait_until(lambda: TriggerRequest.objects.get(id=first).status != "accepted", timeout=30)
    backlog = 20
    for i in range(backlog):
        client.post("/api/v1/trigger", {"workflow": "w", "to": [f"normal-{i}"]}, format="json")
    client.post("/api/v1/trigger", {"workflow": "w", "to": ["urgent"], "priority": "high"}, format="json")
    waiting = {
        request.recipients[0]["id"] for request in TriggerRequest.objects.filter(status="accepted", priority="normal")
    }
    receiver.delay = 0.02

    assert receiver.wait_for(backlog + 2, timeout=60), processes.logs["worker"].read_text()[-3000:]
    order = [json.loads(r["body"])["data"]["recipient"]["id"] for r in receiver.requests]
    # Submitted last, delivered before every normal request that was still waiting when it came.
    assert len(waiting) >= backlog // 2, order
    assert all(order.index("urgent") < order.index(name) for name in waiting), order


def test_every_delivery_arrives_when_redis_is_emptied_mid_flight(processes, receiver, test_redis):
    receiver.delay = 0.05
    processes.dispatcher()
    processes.beat()
    product, key, _ = _setup(receiver)
    client = client_for(key)
    total = 40
    for i in range(total):
        client.post("/api/v1/trigger", {"workflow": "w", "to": [f"u{i}"]}, format="json")
    # Every request hinted, no worker yet: the hints wait in Redis, and are all lost.
    assert wait_until(
        lambda: test_redis.llen("normal") > 0 and not TriggerRequest.objects.filter(enqueued_at__isnull=True).exists(),
        timeout=30,
    )
    test_redis.flushdb()
    processes.worker()
    # Then again while the worker delivers: whatever it hinted and has not taken yet is lost too.
    assert receiver.wait_for(3, timeout=90), processes.logs["worker"].read_text()[-3000:]
    test_redis.flushdb()
    assert len(receiver.requests) < total

    assert wait_until(lambda: Delivery.objects.filter(status=DeliveryStatus.DELIVERED).count() == total, timeout=90)
    delivered_ids = {r["headers"]["webhook-id"] for r in receiver.requests}
    assert delivered_ids == set(Delivery.objects.values_list("message_id", flat=True))
