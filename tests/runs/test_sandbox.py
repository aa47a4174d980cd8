"""Sandboxed workflows and products: deliveries are rendered, held for review, then released or discarded."""

import pytest
from django.contrib.auth import get_user_model
from standardwebhooks.webhooks import Webhook

from apps.audit.models import AuditEvent
from apps.deliveries.models import Delivery, DeliveryStatus
from apps.deliveries.services import deliveries_send
from apps.runs.models import Run, RunStatus
from apps.runs.services import request_start, runs_execute, trigger_create
from tests import factories

pytestmark = pytest.mark.django_db


def _start(product, key="w", data=None):
    request_id, _ = trigger_create(
        tenant=factories.tenant_of(product),
        workflow=key,
        recipients=[{"id": "u1", "email": "u1@example.com"}],
        data=data or {"n": 1},
        priority="normal",
    )
    request_start(request_id=request_id)
    return Run.objects.get(request_id=request_id)


@pytest.fixture
def sandboxed(product, product_client, receiver):
    endpoint = factories.make_endpoint(product, receiver.url())
    response = product_client.post(
        "/api/v1/workflows",
        {
            "key": "w",
            "sandbox": True,
            "steps": [
                {"id": "hook", "type": "notify", "channel": "webhook", "webhook": str(endpoint.id)},
                factories.email_step("mail", subject="Order {{ data.n }}", body="b"),
            ],
        },
        format="json",
    )
    assert response.status_code == 201 and response.json()["sandbox"] is True
    product_client.post("/api/v1/workflows/w/publish")
    return endpoint


def test_held_deliveries_are_rendered_and_wait_for_review(product, product_client, sandboxed, receiver):
    run = _start(product)
    held = Delivery.objects.get(run=run)
    assert held.status == DeliveryStatus.HELD and held.payload["data"]["data"] == {"n": 1}
    deliveries_send(delivery_ids=[held.id])  # a stray hint sends nothing
    assert not receiver.requests
    queue = product_client.get("/api/v1/deliveries", {"status": "held"}).json()["results"]
    assert [(d["id"], d["step"], d["payload"]["type"]) for d in queue] == [
        (held.message_id, "hook", "workflow.notification")
    ]

    response = product_client.post("/api/v1/deliveries/release", {"ids": [held.message_id, "msg_nope"]}, format="json")
    assert response.json() == {"done": [held.message_id], "skipped": ["msg_nope"]}
    deliveries_send(delivery_ids=[held.id])
    body = Webhook(sandboxed.secret).verify(receiver.requests[0]["body"], receiver.requests[0]["headers"])
    assert body["data"]["data"] == {"n": 1} and receiver.requests[0]["headers"]["webhook-id"] == held.message_id
    released = AuditEvent.objects.get(action="delivery.released", target_id=held.message_id)
    assert released.actor.startswith("key:")

    runs_execute(run_ids=[run.id])  # the run went on: its email is held in turn
    mail_delivery = Delivery.objects.get(run=run, step_id="mail")
    assert mail_delivery.status == DeliveryStatus.HELD and mail_delivery.payload["subject"] == "Order 1"
    product_client.post("/api/v1/deliveries/discard", {"ids": [mail_delivery.message_id]}, format="json")
    mail_delivery.refresh_from_db()
    run.refresh_from_db()
    assert mail_delivery.status == DeliveryStatus.DISCARDED and run.status == RunStatus.COMPLETED
    assert AuditEvent.objects.filter(action="delivery.discarded", target_id=mail_delivery.message_id).exists()


def test_a_sandboxed_product_holds_every_workflow(product, product_client, receiver):
    endpoint = factories.make_endpoint(product, receiver.url())
    factories.make_workflow(product, key="w", steps=[factories.webhook_step(endpoint)])
    response = product_client.patch(f"/api/v1/products/{product.id}", {"sandbox": True}, format="json")
    assert response.status_code == 200 and response.json()["sandbox"] is True
    assert Delivery.objects.get(run=_start(product)).status == DeliveryStatus.HELD
    product_client.patch(f"/api/v1/products/{product.id}", {"sandbox": False}, format="json")
    assert Delivery.objects.get(run=_start(product)).status == DeliveryStatus.DELIVERED  # sent at once


def test_review_in_bulk_from_the_admin_names_the_staff_user(product, sandboxed, client):
    runs = [_start(product, data={"n": n}) for n in range(3)]
    staff = get_user_model().objects.create_superuser("reviewer", "r@example.com", "pw")
    client.force_login(staff)
    ids = list(Delivery.objects.filter(run__in=runs).values_list("id", flat=True))
    response = client.post(
        "/admin/deliveries/delivery/", {"action": "release", "_selected_action": ids[:2]}, follow=True
    )
    assert "Released 2 held deliveries" in response.content.decode()
    client.post("/admin/deliveries/delivery/", {"action": "discard", "_selected_action": ids}, follow=True)
    statuses = sorted(Delivery.objects.filter(id__in=ids).values_list("status", flat=True))
    assert statuses == ["discarded", "queued", "queued"]
    assert AuditEvent.objects.filter(action="delivery.released", actor="staff:reviewer").count() == 2
    assert AuditEvent.objects.filter(action="delivery.discarded", actor="staff:reviewer").count() == 1


def test_review_input_errors_name_the_field(product_client):
    response = product_client.post("/api/v1/deliveries/release", {"ids": []}, format="json")
    assert response.status_code == 400 and response.json()["error"]["fields"][0]["field"] == "ids"
    response = product_client.post("/api/v1/deliveries/release", {"ids": "msg_1"}, format="json")
    assert response.status_code == 400
