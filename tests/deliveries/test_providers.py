"""SMS and chat providers, each against a local fake that checks the request as the provider documents it."""

import base64
import json
from datetime import timedelta
from urllib.parse import parse_qs

import pytest
from django.db import connection
from django.utils import timezone

from apps.deliveries.models import Delivery, DeliveryStatus, ProviderConfig
from apps.deliveries.services import deliveries_send
from apps.runs.models import TriggerRequest
from apps.runs.services import request_start, runs_execute, trigger_create
from tests import factories

pytestmark = pytest.mark.django_db

SID = "AC" + "0123456789abcdef" * 2
TOKEN = "fedcba9876543210" * 2


def _send(product, recipient=None, data=None) -> Delivery:
    request_id, _ = trigger_create(tenant=factories.tenant_of(product), workflow="w",
                                   recipients=[recipient or {"id": "u1", "phone": "+14155550123"}],
                                   data=data or {"order": 7}, priority="normal")
    runs_execute(run_ids=request_start(request_id=TriggerRequest.objects.get(id=request_id).id))
    delivery = Delivery.objects.get(request_id=request_id)
    deliveries_send(delivery_ids=[delivery.id])
    delivery.refresh_from_db()
    return delivery


def _configure(client, channel, provider, credentials, options=None):
    response = client.put(f"/api/v1/providers/{channel}", {"provider": provider, "credentials": credentials,
                                                          "options": options or {}}, format="json")
    assert response.status_code == 200, response.json()
    return response.json()


@pytest.fixture
def sms(product, product_client):
    factories.make_workflow(product, key="w", steps=[
        {"id": "text", "type": "notify", "channel": "sms", "text": "Order {{ data.order }} has shipped."}])
    return product


@pytest.fixture
def twilio(sms, product_client, receiver, settings):
    settings.ROWBELL_TWILIO_API_URL = f"http://127.0.0.1:{receiver.port}"
    _configure(product_client, "sms", "twilio", {"account_sid": SID, "auth_token": TOKEN}, {"sender": "+15005550006"})
    return sms


def test_twilio_gets_the_documented_request(twilio, receiver):
    receiver.answer((201, {"Content-Type": "application/json"},
                     json.dumps({"sid": "SM" + "0" * 32, "status": "queued"}).encode()))
    delivery = _send(twilio)
    assert delivery.status == DeliveryStatus.SENT and delivery.target == "+14155550123"
    sent = receiver.requests[0]
    assert sent["path"] == f"/2010-04-01/Accounts/{SID}/Messages.json"
    assert sent["headers"]["authorization"] == "Basic " + base64.b64encode(f"{SID}:{TOKEN}".encode()).decode()
    assert sent["headers"]["content-type"] == "application/x-www-form-urlencoded"
    assert parse_qs(sent["body"].decode()) == {"To": ["+14155550123"], "From": ["+15005550006"],
                                               "Body": ["Order 7 has shipped."]}


def test_twilio_errors_permanent_or_retried_as_documented(twilio, receiver):
    receiver.answer((401, {"Content-Type": "application/json"}, json.dumps(
        {"code": 20003, "message": "Authenticate", "more_info": "https://www.twilio.com/docs/errors/20003",
         "status": 401}).encode()))
    refused = _send(twilio)
    assert refused.status == DeliveryStatus.FAILED
    assert refused.last_error.startswith("Twilio refused the credentials (HTTP 401): error 20003: Authenticate.")

    receiver.answer((400, {}, json.dumps({"code": 21211, "message": "The 'To' number is not a valid phone number.",
                                          "status": 400}).encode()))
    rejected = _send(twilio)
    assert rejected.status == DeliveryStatus.FAILED and "error 21211" in rejected.last_error

    receiver.answer((429, {"Retry-After": "40"}, b'{"code": 20429, "message": "Too Many Requests"}'), 503)
    for busy in (_send(twilio), _send(twilio)):
        assert busy.status == DeliveryStatus.QUEUED and busy.attempt_count == 1  # retried later
    throttled = Delivery.objects.filter(status=DeliveryStatus.QUEUED).order_by("id").first()
    assert throttled.next_attempt_at - timezone.now() > timedelta(seconds=30)  # Retry-After honoured


def test_a_generic_http_sms_gateway_takes_its_configured_request(sms, product_client, receiver):
    _configure(product_client, "sms", "http", {"headers": {"Authorization": "Bearer s3cret"}},
               {"url": receiver.url("/v1/sms"), "fields": {"msisdn": "{{ to }}", "message": "{{ text }}",
                                                            "sender": "Shop"}})
    assert _send(sms).status == DeliveryStatus.SENT
    sent = receiver.requests[0]
    assert sent["path"] == "/v1/sms" and sent["headers"]["authorization"] == "Bearer s3cret"
    assert json.loads(sent["body"]) == {"msisdn": "+14155550123", "message": "Order 7 has shipped.", "sender": "Shop"}

    _configure(product_client, "sms", "http", {}, {"url": receiver.url("/form"), "encoding": "form",
                                                   "fields": {"to": "{{ to }}", "body": "{{ text }}"}})
    _send(sms)
    assert parse_qs(receiver.requests[1]["body"].decode()) == {"to": ["+14155550123"], "body": ["Order 7 has shipped."]}


def test_a_recipient_without_a_phone_is_skipped_with_the_reason(twilio, receiver):
    delivery = _send(twilio, recipient={"id": "u2", "email": "u2@example.com"})
    assert delivery.status == DeliveryStatus.SKIPPED
    assert delivery.last_error.startswith("The recipient has no phone number")
    assert receiver.requests == []


def test_without_a_provider_the_delivery_fails_saying_what_to_configure(sms, receiver):
    delivery = _send(sms)
    assert delivery.status == DeliveryStatus.FAILED
    assert delivery.last_error == "No sms provider is configured for this product (PUT /api/v1/providers/sms)."


@pytest.fixture
def chat(product):
    factories.make_workflow(product, key="w", steps=[
        {"id": "ping", "type": "notify", "channel": "chat", "title": "New order", "text": "Order {{ data.order }}"}])
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
    receiver.answer((200, {}, b"Webhook message delivery failed with error: Microsoft Teams endpoint returned "
                              b"HTTP error 429 with ContextId ..."))
    assert _send(chat).status == DeliveryStatus.QUEUED


def test_credentials_are_checked_encrypted_and_never_shown(product, product_client):
    bad = product_client.put("/api/v1/providers/sms", {"provider": "twilio", "credentials": {
        "account_sid": "nope", "auth_token": TOKEN}, "options": {"sender": "12345"}}, format="json")
    assert bad.status_code == 400
    assert {f["field"] for f in bad.json()["error"]["fields"]} == {"credentials.account_sid", "options.sender"}
    assert product_client.put("/api/v1/providers/fax", {"provider": "x", "credentials": {}},
                              format="json").json()["error"]["fields"][0]["field"] == "channel"
    assert product_client.put("/api/v1/providers/chat", {"provider": "slack", "credentials": {
        "webhook_url": "http://10.0.0.7/hook"}}, format="json").json()["error"]["fields"][0]["field"] == \
        "credentials.webhook_url"

    body = _configure(product_client, "sms", "twilio", {"account_sid": SID, "auth_token": TOKEN},
                      {"sender": "+15005550006"})
    assert body["credentials_set"] == ["account_sid", "auth_token"] and TOKEN not in json.dumps(body)
    listed = product_client.get("/api/v1/providers").json()
    assert TOKEN not in json.dumps(listed) and listed[0]["provider"] == "twilio"
    with connection.cursor() as cursor:
        cursor.execute("SELECT credentials FROM deliveries_providerconfig")
        stored = cursor.fetchone()[0]
    assert TOKEN not in stored and SID not in stored
    assert json.loads(ProviderConfig.objects.get().credentials)["auth_token"] == TOKEN

    assert product_client.delete("/api/v1/providers/sms?organization=garbage").status_code == 400
    assert ProviderConfig.objects.exists()  # a bad organization id deletes nothing
    assert product_client.delete("/api/v1/providers/sms").status_code == 204
    assert product_client.delete("/api/v1/providers/sms").status_code == 404
