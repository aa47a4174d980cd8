"""The SMS channel and its providers, each against a local fake that checks the request as the provider documents
it."""

import base64
import json
from datetime import timedelta
from urllib.parse import parse_qs

import pytest
from django.utils import timezone

from apps.deliveries.models import Delivery, DeliveryStatus
from tests import factories
from tests.deliveries.channels.provided import SID, TOKEN, _configure, _send

pytestmark = pytest.mark.django_db


@pytest.fixture
def sms(product, product_client):
    factories.make_workflow(
        product,
        key="w",
        steps=[{"id": "text", "type": "notify", "channel": "sms", "text": "Order {{ data.order }} has shipped."}],
    )
    return product


@pytest.fixture
def twilio(sms, product_client, receiver, settings):
    settings.ROWBELL_TWILIO_API_URL = f"http://127.0.0.1:{receiver.port}"
    _configure(product_client, "sms", "twilio", {"account_sid": SID, "auth_token": TOKEN}, {"sender": "+15005550006"})
    return sms


def test_twilio_gets_the_documented_request(twilio, receiver):
    receiver.answer(
        (201, {"Content-Type": "application/json"}, json.dumps({"sid": "SM" + "0" * 32, "status": "queued"}).encode())
    )
    delivery = _send(twilio)
    assert delivery.status == DeliveryStatus.SENT and delivery.target == "+14155550123"
    sent = receiver.requests[0]
    assert sent["path"] == f"/2010-04-01/Accounts/{SID}/Messages.json"
    assert sent["headers"]["authorization"] == "Basic " + base64.b64encode(f"{SID}:{TOKEN}".encode()).decode()
    assert sent["headers"]["content-type"] == "application/x-www-form-urlencoded"
    assert parse_qs(sent["body"].decode()) == {
        "To": ["+14155550123"],
        "From": ["+15005550006"],
        "Body": ["Order 7 has shipped."],
    }


def test_twilio_errors_permanent_or_retried_as_documented(twilio, receiver):
    receiver.answer(
        (
            401,
            {"Content-Type": "application/json"},
            json.dumps(
                {
                    "code": 20003,
                    "message": "Authenticate",
                    "more_info": "https://www.twilio.com/docs/errors/20003",
                    "status": 401,
                }
            ).encode(),
        )
    )
    refused = _send(twilio)
    assert refused.status == DeliveryStatus.FAILED
    assert refused.last_error.startswith("Twilio refused the credentials (HTTP 401): error 20003: Authenticate.")

    receiver.answer(
        (
            400,
            {},
            json.dumps(
                {"code": 21211, "message": "The 'To' number is not a valid phone number.", "status": 400}
            ).encode(),
        )
    )
    rejected = _send(twilio)
    assert rejected.status == DeliveryStatus.FAILED and "error 21211" in rejected.last_error

    receiver.answer((429, {"Retry-After": "40"}, b'{"code": 20429, "message": "Too Many Requests"}'), 503)
    for busy in (_send(twilio), _send(twilio)):
        assert busy.status == DeliveryStatus.QUEUED and busy.attempt_count == 1  # retried later
    throttled = Delivery.objects.filter(status=DeliveryStatus.QUEUED).order_by("id").first()
    assert throttled.next_attempt_at - timezone.now() > timedelta(seconds=30)  # Retry-After honoured


def test_a_generic_http_sms_gateway_takes_its_configured_request(sms, product_client, receiver):
    _configure(
        product_client,
        "sms",
        "http",
        {"headers": {"Authorization": "Bearer s3cret"}},
        {"url": receiver.url("/v1/sms"), "fields": {"msisdn": "{{ to }}", "message": "{{ text }}", "sender": "Shop"}},
    )
    assert _send(sms).status == DeliveryStatus.SENT
    sent = receiver.requests[0]
    assert sent["path"] == "/v1/sms" and sent["headers"]["authorization"] == "Bearer s3cret"
    assert json.loads(sent["body"]) == {"msisdn": "+14155550123", "message": "Order 7 has shipped.", "sender": "Shop"}

    _configure(
        product_client,
        "sms",
        "http",
        {},
        {"url": receiver.url("/form"), "encoding": "form", "fields": {"to": "{{ to }}", "body": "{{ text }}"}},
    )
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
