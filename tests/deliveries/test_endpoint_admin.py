"""Webhook endpoints from the admin: disable, enable (queued), replay failed deliveries, rotate the secret."""

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.urls import reverse
from standardwebhooks.webhooks import Webhook

from apps.audit.models import AuditEvent
from apps.dashboard.groups import OPERATORS, READ_ONLY
from apps.deliveries.models import Delivery, DeliveryStatus, WebhookEndpoint
from apps.deliveries.services import deliveries_send
from apps.runs.services import request_start, runs_execute, trigger_create
from tests import factories

pytestmark = pytest.mark.django_db


def _login(client, group):
    user = get_user_model().objects.create_user(group.split()[1], "u@example.com", "pw", is_staff=True)
    user.groups.add(Group.objects.get(name=group))
    client.force_login(user)
    return user


def _act(client, action, endpoint, follow=True):
    return client.post(
        reverse("admin:deliveries_webhookendpoint_changelist"),
        {"action": action, "_selected_action": [endpoint.id], "index": 0},
        follow=follow,
    )


def _failed_delivery(product, endpoint, receiver):
    factories.make_workflow(product, key="w", retry={"max_attempts": 1}, steps=[factories.webhook_step(endpoint)])
    receiver.answer(500)
    request_id, _ = trigger_create(
        tenant=factories.tenant_of(product), workflow="w", recipients=[{"id": "u"}], data={}, priority="normal"
    )
    runs_execute(run_ids=request_start(request_id=request_id))
    delivery = Delivery.objects.get()
    deliveries_send(delivery_ids=[delivery.id])
    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.FAILED
    return delivery


def test_disable_enable_and_replay_from_the_admin(
    client, product, receiver, hinted, django_capture_on_commit_callbacks
):
    endpoint = factories.make_endpoint(product, receiver.url())
    failed = _failed_delivery(product, endpoint, receiver)
    _login(client, OPERATORS)

    assert "Disabled 1 endpoint(s)" in _act(client, "disable", endpoint).content.decode()
    assert WebhookEndpoint.objects.get(id=endpoint.id).enabled is False
    with django_capture_on_commit_callbacks(execute=True):
        page = _act(client, "enable_and_replay", endpoint).content.decode()
    assert "Enabling 1 endpoint(s) in the background, then replaying" in page
    assert WebhookEndpoint.objects.get(id=endpoint.id).enabled is False  # not yet: a task does it
    with django_capture_on_commit_callbacks(execute=True):
        assert hinted.run() == ["apps.core.tasks.queued_action_run"]
    assert WebhookEndpoint.objects.get(id=endpoint.id).enabled is True
    hinted.run()  # the replayed delivery's send
    assert Delivery.objects.get(id=failed.id).status == DeliveryStatus.DELIVERED
    assert receiver.requests[-1]["headers"]["webhook-id"] == failed.message_id  # the original id
    actions = set(AuditEvent.objects.filter(actor="staff:operators").values_list("action", flat=True))
    assert {"webhook.disabled", "webhook.enable_requested", "webhook.enabled", "delivery.replayed"} <= actions


def test_replay_failed_queues_them_again(client, product, receiver, hinted, django_capture_on_commit_callbacks):
    endpoint = factories.make_endpoint(product, receiver.url())
    failed = _failed_delivery(product, endpoint, receiver)
    _login(client, OPERATORS)
    with django_capture_on_commit_callbacks(execute=True):
        page = _act(client, "replay_failed", endpoint).content.decode()
    assert "Queued 1 failed delivery again, with their original webhook-id." in page
    assert hinted.run() == ["apps.deliveries.tasks.deliveries_send"]
    assert Delivery.objects.get(id=failed.id).status == DeliveryStatus.DELIVERED


def test_rotating_shows_the_new_secret_once_and_both_sign_meanwhile(client, product, receiver):
    endpoint = factories.make_endpoint(product, receiver.url())
    old = WebhookEndpoint.objects.get(id=endpoint.id).secret
    _login(client, OPERATORS)
    response = _act(client, "rotate_secret", endpoint, follow=False)
    rotated = WebhookEndpoint.objects.get(id=endpoint.id)
    body = response.content.decode()
    assert response.status_code == 200 and "no-store" in response["Cache-Control"]
    assert rotated.secret != old and rotated.secret in body and old not in body
    change = client.get(reverse("admin:deliveries_webhookendpoint_change", args=[endpoint.id])).content.decode()
    assert rotated.secret not in change  # shown once, never again
    assert rotated.signing_secrets(rotated.previous_secret_until.replace(year=2000)) == [rotated.secret, old]
    assert AuditEvent.objects.get(action="webhook.secret_rotated").actor == "staff:operators"

    _failed_delivery(product, endpoint, receiver)  # signed while both secrets are valid
    hit = receiver.requests[-1]
    for secret in (rotated.secret, old):
        Webhook(secret).verify(hit["body"], hit["headers"])


def test_a_read_only_operator_cannot_disable(client, product, receiver):
    endpoint = factories.make_endpoint(product, receiver.url())
    _login(client, READ_ONLY)
    change = client.get(reverse("admin:deliveries_webhookendpoint_change", args=[endpoint.id])).content.decode()
    assert 'data-action="disable"' not in change
    _act(client, "disable", endpoint)
    assert WebhookEndpoint.objects.get(id=endpoint.id).enabled is True
    assert not AuditEvent.objects.filter(action="webhook.disabled").exists()
