"""Providers' event webhooks per provider configuration: own URL and secret, scoped to its product's
deliveries, Mailgun signed with the configuration's key, SES checked by its SNS signature and topic."""

import base64
import hashlib
import hmac
import json
import time
import uuid
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID
from django.test import Client

from apps.audit.models import AuditEvent
from apps.deliveries import sns
from apps.deliveries.models import Delivery, DeliveryStatus
from tests import factories
from tests.conftest import client_for
from tests.deliveries.channels.provided import _configure, _send

pytestmark = pytest.mark.django_db

POSTMARK_TOKEN = "01234567-89ab-cdef-0123-456789abcdef"
MAILGUN_SIGNING_KEY = "0123456789abcdef0123456789abcdef"
TOPIC = "arn:aws:sns:eu-west-1:123456789012:ses-events"
CERT_URL = "https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-0000000000000000000000000000000.pem"


def _mailed(product) -> Delivery:
    """A sent email of `product` (through the default backend: the provider is configured afterwards)."""
    factories.make_workflow(product, key="w", steps=[factories.email_step(subject="Shipped")])
    delivery = _send(product, recipient={"id": "u1", "email": "ada@example.com", "name": "Ada"})
    assert delivery.status == DeliveryStatus.SENT
    return delivery


def _auth(secret: str) -> str:
    return "Basic " + base64.b64encode(f"rowbell:{secret}".encode()).decode()


def _postmark_open(message_id: str, provider_message_id: str = "") -> str:
    return json.dumps(
        {
            "RecordType": "Open",
            "MessageStream": "outbound",
            "FirstOpen": True,
            "MessageID": provider_message_id or str(uuid.uuid4()),
            "Recipient": "ada@example.com",
            "ReceivedAt": "2026-11-21T10:00:00Z",
            "Platform": "Desktop",
            "ReadSeconds": 5,
            "Metadata": {"rowbell_message_id": message_id} if message_id else {},
        }
    )


@pytest.fixture
def two_products(product, product_client):
    """Product A (the `product` fixture) and product B, each with a sent email and Postmark configured."""
    other, other_key = factories.make_product("Other")
    other_client = client_for(other_key)
    ours, theirs = _mailed(product), _mailed(other)
    a = _configure(product_client, "email", "postmark", {"server_token": POSTMARK_TOKEN})["events_webhook"]
    b = _configure(other_client, "email", "postmark", {"server_token": POSTMARK_TOKEN})["events_webhook"]
    return {"ours": ours, "theirs": theirs, "a": a, "b": b, "other_client": other_client}


def test_each_product_has_its_own_event_webhook_url_and_secret_shown_once(two_products, product_client):
    a, b = two_products["a"], two_products["b"]
    assert a["url"] != b["url"] and a["secret"] != b["secret"] and a["username"] == "rowbell"
    assert urlsplit(a["url"]).path.startswith("/webhooks/providers/postmark/")
    assert urlsplit(a["url_with_secret"]).password == a["secret"]
    # Listed afterwards with the URL, never with the secret.
    listed = product_client.get("/api/v1/providers").json()[0]["events_webhook"]
    assert listed == {"url": a["url"], "username": "rowbell", "secret": "********"}
    assert a["secret"] not in json.dumps(product_client.get("/api/v1/providers").json())
    # Changing the configuration keeps its URL and secret: the provider's webhook keeps working.
    again = _configure(
        product_client, "email", "postmark", {"server_token": POSTMARK_TOKEN}, {"from_email": "shop@example.com"}
    )["events_webhook"]
    assert again == listed
    # Rotation: a new secret, shown once; the old one stops working.
    rotated = product_client.post("/api/v1/providers/email/rotate-events-secret", {}, format="json").json()
    new = rotated["events_webhook"]
    assert new["url"] == a["url"] and new["secret"] not in (a["secret"], "********")
    assert AuditEvent.objects.filter(action="provider.events_secret_rotated").count() == 1
    path = urlsplit(a["url"]).path
    event = _postmark_open(two_products["ours"].message_id)
    client = Client()
    assert (
        client.post(path, event, content_type="application/json", HTTP_AUTHORIZATION=_auth(a["secret"])).status_code
        == 400
    )
    assert (
        client.post(path, event, content_type="application/json", HTTP_AUTHORIZATION=_auth(new["secret"])).status_code
        == 200
    )


def test_a_products_webhook_cannot_mark_another_products_delivery(two_products):
    ours, theirs, a = two_products["ours"], two_products["theirs"], two_products["a"]
    Delivery.objects.filter(id=theirs.id).update(provider_message_id="pm-theirs")
    path, client = urlsplit(a["url"]).path, Client()
    # Product A's URL and secret, naming product B's delivery by Rowbell's id, then by the provider's id.
    for event in (_postmark_open(theirs.message_id), _postmark_open("", provider_message_id="pm-theirs")):
        assert (
            client.post(path, event, content_type="application/json", HTTP_AUTHORIZATION=_auth(a["secret"])).status_code
            == 200
        )
    theirs.refresh_from_db()
    assert theirs.status == DeliveryStatus.SENT and not theirs.events.filter(source="provider").exists()
    # The same call about its own delivery counts.
    assert (
        client.post(
            path,
            _postmark_open(ours.message_id),
            content_type="application/json",
            HTTP_AUTHORIZATION=_auth(a["secret"]),
        ).status_code
        == 200
    )
    ours.refresh_from_db()
    assert ours.status == DeliveryStatus.OPENED


def test_a_wrong_secret_or_token_is_refused(two_products):
    ours, a, b = two_products["ours"], two_products["a"], two_products["b"]
    path, client, event = urlsplit(a["url"]).path, Client(), _postmark_open(two_products["ours"].message_id)
    assert client.post(path, event, content_type="application/json").status_code == 400  # no auth
    assert (
        client.post(path, event, content_type="application/json", HTTP_AUTHORIZATION=_auth(b["secret"])).status_code
        == 400
    )  # another product's secret
    assert (
        client.post(path, event, content_type="application/json", HTTP_AUTHORIZATION=_auth("guess")).status_code == 400
    )
    assert (
        client.post(
            "/webhooks/providers/postmark/not-a-token/tracking/",
            event,
            content_type="application/json",
            HTTP_AUTHORIZATION=_auth(a["secret"]),
        ).status_code
        == 404
    )
    assert (
        client.post(
            path.replace("/postmark/", "/mailgun/"),
            event,
            content_type="application/json",
            HTTP_AUTHORIZATION=_auth(a["secret"]),
        ).status_code
        == 404
    )
    ours.refresh_from_db()
    assert ours.status == DeliveryStatus.SENT


def _mailgun_event(message_id: str, signing_key: str) -> str:
    timestamp, token = str(int(time.time())), uuid.uuid4().hex
    signature = hmac.new(signing_key.encode(), f"{timestamp}{token}".encode(), hashlib.sha256).hexdigest()
    return json.dumps(
        {
            "signature": {"timestamp": timestamp, "token": token, "signature": signature},
            "event-data": {
                "event": "delivered",
                "timestamp": time.time(),
                "id": uuid.uuid4().hex,
                "recipient": "ada@example.com",
                "user-variables": {"rowbell_message_id": message_id},
                "message": {"headers": {"message-id": "mg-1@example.com"}},
            },
        }
    )


def test_mailgun_events_are_checked_with_the_configurations_signing_key(product, product_client):
    ours = _mailed(product)
    api_key = "key-0123456789abcdef0123456789abcdef"
    hook = _configure(product_client, "email", "mailgun", {"api_key": api_key})["events_webhook"]
    path, client, auth = urlsplit(hook["url"]).path, Client(), _auth(hook["secret"])
    # Without the signing key in the configuration, every call is refused.
    assert (
        client.post(
            path,
            _mailgun_event(ours.message_id, MAILGUN_SIGNING_KEY),
            content_type="application/json",
            HTTP_AUTHORIZATION=auth,
        ).status_code
        == 403
    )
    _configure(product_client, "email", "mailgun", {"api_key": api_key, "webhook_signing_key": MAILGUN_SIGNING_KEY})
    assert (
        client.post(
            path, _mailgun_event(ours.message_id, "f" * 32), content_type="application/json", HTTP_AUTHORIZATION=auth
        ).status_code
        == 400
    )
    ours.refresh_from_db()
    assert ours.status == DeliveryStatus.SENT
    assert (
        client.post(
            path,
            _mailgun_event(ours.message_id, MAILGUN_SIGNING_KEY),
            content_type="application/json",
            HTTP_AUTHORIZATION=auth,
        ).status_code
        == 200
    )
    ours.refresh_from_db()
    assert ours.status == DeliveryStatus.DELIVERED


# --- Amazon SES through SNS ---------------------------------------------------------------------------


@pytest.fixture
def signer(monkeypatch):
    """A self-signed certificate standing in for SNS's: only the certificate download is replaced."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.amazonaws.com")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    fetched = []

    def certificate_pem(url):
        fetched.append(url)
        return cert.public_bytes(serialization.Encoding.PEM)

    monkeypatch.setattr(sns, "_certificate_pem", certificate_pem)
    sns._keys.clear()
    yield key, fetched
    sns._keys.clear()


def _sns(key, message_type="Notification", version="2", topic=TOPIC, cert_url=CERT_URL, **fields) -> dict:
    body = {
        "Type": message_type,
        "MessageId": str(uuid.uuid4()),
        "TopicArn": topic,
        "Timestamp": "2026-11-21T10:00:00.000Z",
        "SignatureVersion": version,
        "SigningCertURL": cert_url,
        **fields,
    }
    digest = hashes.SHA1() if version == "1" else hashes.SHA256()
    body["Signature"] = base64.b64encode(key.sign(sns.string_to_sign(body), padding.PKCS1v15(), digest)).decode()
    return body


def _ses_bounce(provider_message_id: str) -> str:
    return json.dumps(
        {
            "eventType": "Bounce",
            "bounce": {
                "bounceType": "Permanent",
                "bounceSubType": "General",
                "timestamp": "2026-11-21T10:00:00.000Z",
                "feedbackId": "0102-feedback",
                "bouncedRecipients": [{"emailAddress": "ada@example.com"}],
            },
            "mail": {
                "timestamp": "2026-11-21T09:59:00.000Z",
                "messageId": provider_message_id,
                "source": "shop@example.com",
                "destination": ["ada@example.com"],
            },
        }
    )


def _post_sns(client, path, secret, body):
    return client.post(
        path,
        json.dumps(body),
        content_type="text/plain; charset=UTF-8",
        HTTP_AUTHORIZATION=_auth(secret),
        HTTP_X_AMZ_SNS_MESSAGE_TYPE=body["Type"],
        HTTP_X_AMZ_SNS_MESSAGE_ID=body["MessageId"],
    )


@pytest.fixture
def ses(product, product_client):
    ours = _mailed(product)
    Delivery.objects.filter(id=ours.id).update(provider_message_id="0102019a-ses-1")
    credentials = {"access_key_id": "AKIAABCDEFGHIJKLMNOP", "secret_access_key": "a" * 40}
    hook = _configure(product_client, "email", "ses", credentials, {"region": "eu-west-1", "events_topic_arn": TOPIC})[
        "events_webhook"
    ]
    return ours, urlsplit(hook["url"]).path, hook["secret"]


def test_ses_events_with_a_good_sns_signature_are_accepted(ses, signer):
    ours, path, secret = ses
    key, fetched = signer
    for version in ("1", "2"):  # SHA1 and SHA256 signatures
        body = _sns(key, version=version, Message=_ses_bounce("0102019a-ses-1"), Subject="Amazon SES Email Event")
        assert _post_sns(Client(), path, secret, body).status_code == 200
    ours.refresh_from_db()
    assert ours.status == DeliveryStatus.BOUNCED
    assert fetched == [CERT_URL]  # fetched once, then kept


def test_ses_events_with_a_bad_signature_or_another_topic_are_refused(ses, signer):
    ours, path, secret = ses
    key, fetched = signer
    client = Client()
    tampered = _sns(key, Message=_ses_bounce("0102019a-ses-1"))
    tampered["Message"] = tampered["Message"].replace("Permanent", "Transient")
    assert _post_sns(client, path, secret, tampered).status_code == 400
    unsigned = {**_sns(key, Message=_ses_bounce("0102019a-ses-1")), "Signature": ""}
    assert _post_sns(client, path, secret, unsigned).status_code == 400
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    assert _post_sns(client, path, secret, _sns(stranger, Message=_ses_bounce("0102019a-ses-1"))).status_code == 400
    other_topic = _sns(key, topic="arn:aws:sns:eu-west-1:999999999999:theirs", Message=_ses_bounce("0102019a-ses-1"))
    assert _post_sns(client, path, secret, other_topic).status_code == 400
    off_aws = _sns(
        key, cert_url="https://sns.eu-west-1.amazonaws.com.evil.example/cert.pem", Message=_ses_bounce("0102019a-ses-1")
    )
    assert _post_sns(client, path, secret, off_aws).status_code == 400
    plain_http = _sns(key, cert_url=CERT_URL.replace("https:", "http:"), Message=_ses_bounce("0102019a-ses-1"))
    assert _post_sns(client, path, secret, plain_http).status_code == 400
    ours.refresh_from_db()
    assert ours.status == DeliveryStatus.SENT
    assert set(fetched) <= {CERT_URL}  # nothing fetched from anywhere else


def test_ses_subscription_confirmation_is_signature_checked_then_confirmed(ses, signer, monkeypatch):
    from apps.deliveries.provider_events import verified_ses_view

    _, path, secret = ses
    key, _ = signer
    confirmed = []

    class FakeSns:
        def confirm_subscription(self, **kwargs):
            confirmed.append(kwargs)

        def close(self):
            pass

    made = []
    monkeypatch.setattr(
        verified_ses_view(),
        "get_boto_client",
        lambda self, service, **kwargs: made.append((service, kwargs, self.client_params)) or FakeSns(),
    )
    fields = {
        "Message": "You have chosen to subscribe to the topic.",
        "Token": "tok-1",
        "SubscribeURL": "https://sns.eu-west-1.amazonaws.com/?Action=ConfirmSubscription&Token=tok-1",
    }
    forged = {**_sns(key, message_type="SubscriptionConfirmation", **fields), "Token": "tok-2"}
    assert _post_sns(Client(), path, secret, forged).status_code == 400 and confirmed == []
    good = _sns(key, message_type="SubscriptionConfirmation", **fields)
    assert _post_sns(Client(), path, secret, good).status_code == 200
    assert confirmed == [{"TopicArn": TOPIC, "Token": "tok-1", "AuthenticateOnUnsubscribe": "true"}]
    # Confirmed in the topic's region with the configuration's own AWS key.
    assert made[0][:2] == ("sns", {"region_name": "eu-west-1"})
    assert made[0][2]["aws_access_key_id"] == "AKIAABCDEFGHIJKLMNOP"


def test_ses_without_a_configured_topic_refuses_every_call(product, product_client, signer):
    _mailed(product)
    hook = _configure(
        product_client,
        "email",
        "ses",
        {"access_key_id": "AKIAABCDEFGHIJKLMNOP", "secret_access_key": "a" * 40},
        {"region": "eu-west-1"},
    )["events_webhook"]
    body = _sns(signer[0], Message=_ses_bounce("0102019a-ses-1"))
    assert _post_sns(Client(), urlsplit(hook["url"]).path, hook["secret"], body).status_code == 403


def test_the_service_wide_ses_route_checks_sns_signatures_too(product, settings, signer):
    ours = _mailed(product)
    Delivery.objects.filter(id=ours.id).update(provider_message_id="0102019a-ses-1")
    settings.ANYMAIL = {"WEBHOOK_SECRET": "rowbell:s3cret"}
    body = _sns(signer[0], Message=_ses_bounce("0102019a-ses-1"))
    body["Signature"] = base64.b64encode(b"\0" * 256).decode()
    assert _post_sns(Client(), "/webhooks/providers/amazon_ses/tracking/", "s3cret", body).status_code == 400
    ours.refresh_from_db()
    assert ours.status == DeliveryStatus.SENT


def _post_raw(path, body: bytes, *, secret: str, message_type="Notification", message_id="m-1"):
    """A POST as SNS makes it, with the body as given; answers 500 instead of raising."""
    return Client(raise_request_exception=False).post(
        path,
        body,
        content_type="text/plain; charset=utf-8",
        HTTP_AUTHORIZATION=_auth(secret),
        HTTP_X_AMZ_SNS_MESSAGE_TYPE=message_type,
        HTTP_X_AMZ_SNS_MESSAGE_ID=message_id,
    )


def test_ses_malformed_sns_bodies_answer_400_without_fetching_a_certificate(ses, signer):
    ours, path, secret = ses
    key, fetched = signer
    good = _sns(key, Message=_ses_bounce("0102019a-ses-1"))
    malformed = [
        b"not json",
        b"\xff\xfe",
        b"[]",
        b'"Notification"',
        json.dumps({"Type": [], "MessageId": "m-1"}).encode(),
        json.dumps({"Type": {"a": 1}, "MessageId": "m-1"}).encode(),
    ]
    # Every field read from the message must be a string: each of these, in an otherwise signed message.
    for name, value in (
        ("SignatureVersion", ["2"]),
        ("SignatureVersion", 2),
        ("SigningCertURL", {"u": CERT_URL}),
        ("TopicArn", [TOPIC]),
        ("Message", 7),
        ("MessageId", None),
        ("Timestamp", 0),
        ("Signature", ["x"]),
        ("Subject", ["s"]),
    ):
        malformed.append(json.dumps({**good, name: value}).encode())
    for body in malformed:
        answer = _post_raw(path, body, secret=secret, message_id=good["MessageId"])
        assert answer.status_code == 400, body
    assert fetched == []
    # A message signed by SNS whose Message anymail cannot read: 400 as well (SNS does not retry it).
    unreadable = _sns(key, Message="{not json")
    assert (
        _post_raw(path, json.dumps(unreadable).encode(), secret=secret, message_id=unreadable["MessageId"]).status_code
        == 400
    )
    ours.refresh_from_db()
    assert ours.status == DeliveryStatus.SENT


def test_ses_checks_basic_auth_before_fetching_a_certificate(ses, signer):
    ours, path, _ = ses
    key, fetched = signer
    body = _sns(key, Message=_ses_bounce("0102019a-ses-1"))
    # The URL's token alone (a wrong secret): refused before the signature is looked at.
    assert _post_raw(path, json.dumps(body).encode(), secret="guess", message_id=body["MessageId"]).status_code == 400
    assert _post_raw(path, b"not json", secret="guess").status_code == 400
    assert _post_raw(path, json.dumps({"Type": []}).encode(), secret="guess").status_code == 400
    assert fetched == []
    ours.refresh_from_db()
    assert ours.status == DeliveryStatus.SENT


@pytest.mark.parametrize(
    "cert_url",
    [
        "https://sns.s3.amazonaws.com/SimpleNotificationService-0.pem",  # an S3 bucket named "sns"
        "https://sns.s3-us-west-2.amazonaws.com/SimpleNotificationService-0.pem",
        "https://sns.s3.eu-west-1.amazonaws.com/SimpleNotificationService-0.pem",
        "https://sns.eu-west-1.amazonaws.com.cn/SimpleNotificationService-0.pem",  # .cn outside China
        "https://sns.cn-north-1.amazonaws.com/SimpleNotificationService-0.pem",
        "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-0.pem",  # another region than the topic's
        "https://sns.eu-west-1.amazonaws.com:8443/SimpleNotificationService-0.pem",
        "https://sns.eu-west-1.amazonaws.com:x/SimpleNotificationService-0.pem",
        "https://user@sns.eu-west-1.amazonaws.com/SimpleNotificationService-0.pem",
    ],
)
def test_ses_signing_certificates_are_only_fetched_from_the_topics_sns_region(ses, signer, cert_url):
    ours, path, secret = ses
    key, fetched = signer
    body = _sns(key, cert_url=cert_url, Message=_ses_bounce("0102019a-ses-1"))
    assert _post_raw(path, json.dumps(body).encode(), secret=secret, message_id=body["MessageId"]).status_code == 400
    assert fetched == []
    ours.refresh_from_db()
    assert ours.status == DeliveryStatus.SENT


def test_sns_certificate_hosts_are_regional_sns_endpoints():
    for url, region in (
        ("https://sns.eu-west-1.amazonaws.com/c.pem", "eu-west-1"),
        ("https://sns.us-gov-west-1.amazonaws.com/c.pem", "us-gov-west-1"),
        ("https://sns.cn-northwest-1.amazonaws.com.cn/c.pem", "cn-northwest-1"),
        ("https://sns.ap-southeast-3.amazonaws.com/c.pem", None),
    ):
        sns.signing_cert_url_check(url, region=region)
    assert sns.topic_region("arn:aws-cn:sns:cn-north-1:123456789012:events") == "cn-north-1"
    for arn in ("arn:aws:s3:::bucket", "arn:aws:sns:eu-west-1:123:t", ["arn"], "arn:aws:sns:eu-west-1:123456789012:"):
        with pytest.raises(sns.SnsSignatureInvalid):
            sns.topic_region(arn)


class _CertServer:
    """A local HTTP server answering every GET from `answers` (path -> (status, headers, body))."""

    def __init__(self, answers):
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
        from threading import Thread

        self.paths = []
        server_self = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                server_self.paths.append(self.path)
                status, headers, body = answers[self.path]
                self.send_response(status)
                for name, value in {**headers, "Content-Length": str(len(body))}.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        Thread(target=self.server.serve_forever, daemon=True).start()


def test_sns_certificate_download_follows_no_redirect_and_is_bounded():
    pem = b"-----BEGIN CERTIFICATE-----\n" + b"A" * 64 + b"\n-----END CERTIFICATE-----\n"
    server = _CertServer(
        {
            "/cert.pem": (200, {}, pem),
            "/moved.pem": (302, {"Location": "/cert.pem"}, b""),
            "/huge.pem": (200, {}, b"A" * (sns.CERT_MAX_BYTES + 1)),
        }
    )
    try:
        assert sns._certificate_pem(f"{server.base}/cert.pem") == pem
        with pytest.raises(OSError):
            sns._certificate_pem(f"{server.base}/moved.pem")
        assert server.paths == ["/cert.pem", "/moved.pem"]  # the redirect's target was not asked for
        with pytest.raises(OSError):
            sns._certificate_pem(f"{server.base}/huge.pem")
    finally:
        server.server.shutdown()
        server.server.server_close()


def test_a_certificate_that_cannot_be_read_is_not_fetched_again_at_once(monkeypatch):
    tries = []

    def unreachable(url):
        tries.append(url)
        raise OSError("connection refused")

    monkeypatch.setattr(sns, "_certificate_pem", unreachable)
    sns.cache_clear()
    try:
        for _ in range(3):
            with pytest.raises(sns.SnsSignatureInvalid):
                sns._public_key(CERT_URL)
        assert tries == [CERT_URL]
    finally:
        sns.cache_clear()
