"""Helpers for the channel tests: a trigger call sent through to its delivery, a provider configured."""

import pytest

from apps.deliveries.models import Delivery
from apps.deliveries.services import deliveries_send
from apps.runs.models import TriggerRequest
from apps.runs.services import request_start, runs_execute, trigger_create
from tests import factories

pytestmark = pytest.mark.django_db

SID = "AC" + "0123456789abcdef" * 2
TOKEN = "fedcba9876543210" * 2


def _send(product, recipient=None, data=None) -> Delivery:
    request_id, _ = trigger_create(
        tenant=factories.tenant_of(product),
        workflow="w",
        recipients=[recipient or {"id": "u1", "phone": "+14155550123"}],
        data=data or {"order": 7},
        priority="normal",
    )
    runs_execute(run_ids=request_start(request_id=TriggerRequest.objects.get(id=request_id).id))
    delivery = Delivery.objects.get(request_id=request_id)
    if delivery.attempt_count == 0:  # one attempt: the task that starts a request may have sent it already
        deliveries_send(delivery_ids=[delivery.id])
    delivery.refresh_from_db()
    return delivery


def _configure(client, channel, provider, credentials, options=None):
    response = client.put(
        f"/api/v1/providers/{channel}",
        {"provider": provider, "credentials": credentials, "options": options or {}},
        format="json",
    )
    assert response.status_code == 200, response.json()
    return response.json()
