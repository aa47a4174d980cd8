"""Email providers chosen per product, each against a local fake that checks the request as the
provider documents it (through anymail's backends), and the product's own SMTP server."""

import base64
import json
from urllib.parse import parse_qs

import pytest

from apps.deliveries.models import Delivery, DeliveryStatus
from tests import factories
from tests.deliveries.channels.provided import _configure, _send

pytestmark = pytest.mark.django_db

HTML = "<p>Order {{ data.order }}</p>"


@pytest.fixture
def mail(product):
    factories.make_workflow(
        product, key="w", steps=[factories.email_step(subject="Shipped", body="Order {{ data.order }}", html=HTML)]
    )
    return product


def _recipient():
    return {"id": "u1", "email": "ada@example.com", "name": "Ada"}


def test_sendgrid(mail, product_client, receiver, settings):
    settings.ROWBELL_SENDGRID_API_URL = receiver.url("/v3/")
    key = "SG.abcdefghijklmnopqrstuv.abcdefghijklmnopqrstuvwxyz0123456789"
    _configure(product_client, "email", "sendgrid", {"api_key": key}, {"from_email": "shop@example.com"})
    receiver.answer((202, {}, b""))
    delivery = _send(mail, recipient=_recipient())
    assert delivery.status == DeliveryStatus.SENT
    sent = receiver.requests[0]
    assert sent["path"] == "/v3/mail/send" and sent["headers"]["authorization"] == f"Bearer {key}"
    body = json.loads(sent["body"])
    assert body["personalizations"][0]["to"] == [{"email": "ada@example.com"}]
    assert body["from"] == {"email": "shop@example.com"} and body["subject"] == "Shipped"
    assert [c["type"] for c in body["content"]] == ["text/plain", "text/html"]
    assert body["content"][1]["value"] == "<p>Order 7</p>"
    assert body["custom_args"]["rowbell_message_id"] == delivery.message_id
    assert delivery.provider_message_id == body["personalizations"][0]["custom_args"]["anymail_id"]

    receiver.answer(
        (
            401,
            {},
            b'{"errors":[{"message":"The provided authorization grant is invalid, expired, or '
            b'revoked","field":null,"help":null}]}',
        )
    )
    refused = _send(mail, recipient=_recipient())
    assert refused.status == DeliveryStatus.FAILED
    assert refused.last_error.startswith("SendGrid refused the credentials (HTTP 401)")
    receiver.answer((503, {}, b"busy"))
    assert _send(mail, recipient=_recipient()).status == DeliveryStatus.QUEUED  # retried


def test_mailgun(mail, product_client, receiver, settings):
    settings.ROWBELL_MAILGUN_API_URL = receiver.url("/v3")
    _configure(
        product_client,
        "email",
        "mailgun",
        {"api_key": "key-0123456789abcdef0123456789abcdef"},
        {"from_email": "shop@mg.example.com", "sender_domain": "mg.example.com"},
    )
    receiver.answer(
        (
            200,
            {"Content-Type": "application/json"},
            b'{"id": "<20261121.1@mg.example.com>", "message": "Queued. Thank you."}',
        )
    )
    delivery = _send(mail, recipient=_recipient())
    assert delivery.status == DeliveryStatus.SENT
    assert delivery.provider_message_id == "<20261121.1@mg.example.com>"
    sent = receiver.requests[0]
    assert sent["path"] == "/v3/mg.example.com/messages"
    assert (
        sent["headers"]["authorization"]
        == "Basic " + base64.b64encode(b"api:key-0123456789abcdef0123456789abcdef").decode()
    )
    # The Messages API takes a form, url-encoded (no attachments) or multipart.
    assert sent["headers"]["content-type"] == "application/x-www-form-urlencoded"
    form = parse_qs(sent["body"].decode())
    assert {name: form[name] for name in ("from", "to", "subject", "text", "html", "v:rowbell_message_id")} == {
        "from": ["shop@mg.example.com"],
        "to": ["ada@example.com"],
        "subject": ["Shipped"],
        "text": ["Order 7"],
        "html": ["<p>Order 7</p>"],
        "v:rowbell_message_id": [delivery.message_id],
    }

    receiver.answer((400, {}, b'{"message": "to parameter is not a valid address. please check documentation"}'))
    rejected = _send(mail, recipient=_recipient())
    assert rejected.status == DeliveryStatus.FAILED and "Mailgun rejected the message (HTTP 400)" in rejected.last_error


def test_postmark(mail, product_client, receiver, settings):
    settings.ROWBELL_POSTMARK_API_URL = receiver.url("/")
    token = "01234567-89ab-cdef-0123-456789abcdef"
    _configure(product_client, "email", "postmark", {"server_token": token}, {"from_email": "shop@example.com"})
    receiver.answer(
        (
            200,
            {"Content-Type": "application/json"},
            json.dumps(
                {
                    "To": "ada@example.com",
                    "SubmittedAt": "2026-11-21T10:00:00Z",
                    "MessageID": "b7bc2f4a-e38e-4336-af7d-e6c392c2f817",
                    "ErrorCode": 0,
                    "Message": "OK",
                }
            ).encode(),
        )
    )
    delivery = _send(mail, recipient=_recipient())
    assert delivery.status == DeliveryStatus.SENT
    assert delivery.provider_message_id == "b7bc2f4a-e38e-4336-af7d-e6c392c2f817"
    sent = receiver.requests[0]
    assert sent["path"] == "/email" and sent["headers"]["x-postmark-server-token"] == token
    body = json.loads(sent["body"])
    assert (body["From"], body["To"], body["Subject"]) == ("shop@example.com", "ada@example.com", "Shipped")
    assert body["TextBody"] == "Order 7" and body["HtmlBody"] == "<p>Order 7</p>"
    assert body["Metadata"] == {"rowbell_message_id": delivery.message_id}

    receiver.answer((422, {}, b'{"ErrorCode": 300, "Message": "Invalid email request"}'))
    assert "Postmark rejected the message (HTTP 422)" in _send(mail, recipient=_recipient()).last_error


def test_amazon_ses(mail, product_client, receiver, settings):
    settings.ROWBELL_SES_ENDPOINT_URL = receiver.url("")
    _configure(
        product_client,
        "email",
        "ses",
        {"access_key_id": "AKIAABCDEFGHIJKLMNOP", "secret_access_key": "a" * 40},
        {"from_email": "shop@example.com", "region": "eu-west-1"},
    )
    receiver.answer((200, {"Content-Type": "application/json"}, b'{"MessageId": "0102019a-ses-1"}'))
    delivery = _send(mail, recipient=_recipient())
    assert delivery.status == DeliveryStatus.SENT and delivery.provider_message_id == "0102019a-ses-1"
    sent = receiver.requests[0]
    assert sent["path"] == "/v2/email/outbound-emails"
    assert sent["headers"]["authorization"].startswith("AWS4-HMAC-SHA256 Credential=AKIAABCDEFGHIJKLMNOP/")
    assert "/eu-west-1/ses/aws4_request" in sent["headers"]["authorization"]
    body = json.loads(sent["body"])
    assert body["Destination"]["ToAddresses"] == ["ada@example.com"]
    # SendEmail with raw content: the sender and the rest are in the MIME message itself.
    mime = base64.b64decode(body["Content"]["Raw"]["Data"]).decode()
    assert "From: shop@example.com" in mime and "Subject: Shipped" in mime and "Order 7" in mime

    receiver.answer(
        (
            400,
            {"x-amzn-ErrorType": "MessageRejected", "Content-Type": "application/json"},
            b'{"message": "Email address is not verified."}',
        )
    )
    rejected = _send(mail, recipient=_recipient())
    assert rejected.status == DeliveryStatus.FAILED
    assert "Amazon SES rejected the message (HTTP 400)" in rejected.last_error
    assert len(receiver.requests) == 2  # one request per attempt: boto3's own retries are off


def test_the_products_own_smtp_server_is_checked_on_the_address_it_connects_to(
    mail, product_client, smtp_sink, settings
):
    _configure(
        product_client,
        "email",
        "smtp",
        {"username": "", "password": ""},
        {"host": "localhost", "port": smtp_sink.port, "security": "none", "from_email": "shop@example.com"},
    )
    delivery = _send(mail, recipient=_recipient())
    assert delivery.status == DeliveryStatus.SENT
    assert smtp_sink.messages[0]["from"] == "shop@example.com" and smtp_sink.messages[0]["to"] == ["ada@example.com"]

    settings.ROWBELL_OUTBOUND_ALLOW = []  # loopback is no longer opened: the server's name resolves to it
    refused = _send(mail, recipient=_recipient())
    assert refused.status == DeliveryStatus.FAILED
    assert refused.last_error.startswith("localhost resolves to a private or reserved address (127.0.0.1);")
    assert "ROWBELL_OUTBOUND_ALLOW" in refused.last_error
    assert len(smtp_sink.messages) == 1


def test_without_a_provider_email_goes_through_the_default_backend(mail):
    from django.core import mail as outbox

    assert _send(mail, recipient=_recipient()).status == DeliveryStatus.SENT
    assert outbox.outbox[0].to == ["ada@example.com"]
    assert Delivery.objects.get().provider_message_id == ""
