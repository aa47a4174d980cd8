"""The chat channel and its providers (Slack, Microsoft Teams), against a local fake that checks the request as
the provider documents it."""

import json

import pytest

from apps.deliveries.models import DeliveryStatus
from tests import factories
from tests.deliveries.channels.provided import _configure, _send

pytestmark = pytest.mark.django_db


@pytest.fixture
def chat(product):
    factories.make_workflow(
        product,
        key="w",
        steps=[
            {"id": "ping", "type": "notify", "channel": "chat", "title": "New order", "text": "Order {{ data.order }}"}
        ],
    )
    return product


def test_slack_incoming_webhook(chat, product_client, receiver):
    _configure(product_client, "chat", "slack", {"webhook_url": receiver.url("/services/T0/B0/abc")})
    receiver.answer((200, {"Content-Type": "text/html"}, b"ok"))
    assert _send(chat).status == DeliveryStatus.SENT
    sent = receiver.requests[0]
    assert sent["path"] == "/services/T0/B0/abc" and sent["headers"]["content-type"] == "application/json"
    assert json.loads(sent["body"]) == {"text": "*New order*\nOrder 7"}

    receiver.answer((404, {}, b"channel_not_found"))
    gone = _send(chat)
    assert gone.status == DeliveryStatus.FAILED
    assert gone.last_error == "Slack rejected the message (HTTP 404): channel_not_found"
    receiver.answer((429, {"Retry-After": "5"}, b"rate_limited"))
    assert _send(chat).status == DeliveryStatus.QUEUED


def test_teams_incoming_webhook(chat, product_client, receiver):
    _configure(product_client, "chat", "teams", {"webhook_url": receiver.url("/webhookb2/xyz")})
    receiver.answer((202, {}, b""))
    assert _send(chat).status == DeliveryStatus.SENT
    message = json.loads(receiver.requests[0]["body"])
    assert message["type"] == "message"
    attachment = message["attachments"][0]
    assert attachment["contentType"] == "application/vnd.microsoft.card.adaptive"
    assert attachment["content"]["type"] == "AdaptiveCard"
    assert [b["text"] for b in attachment["content"]["body"]] == ["New order", "Order 7"]
    # A legacy connector reports a failure in a 200's body.
    receiver.answer(
        (
            200,
            {},
            b"Webhook message delivery failed with error: Microsoft Teams endpoint returned "
            b"HTTP error 429 with ContextId ...",
        )
    )
    assert _send(chat).status == DeliveryStatus.QUEUED
