"""Push through Firebase Cloud Messaging HTTP v1 (service account, OAuth 2.0) and a generic HTTP gateway."""

import base64
import json
from urllib.parse import parse_qs

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from apps.deliveries.channels.push import providers
from apps.deliveries.models import DeliveryStatus
from tests import factories
from tests.deliveries.channels.provided import _configure, _send

pytestmark = pytest.mark.django_db

DEVICE = "fcm-device-token-1"


@pytest.fixture(autouse=True)
def no_cached_tokens():
    providers._tokens.clear()
    yield
    providers._tokens.clear()


@pytest.fixture
def key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def push(product):
    factories.make_workflow(
        product,
        key="w",
        steps=[
            {
                "id": "buzz",
                "type": "notify",
                "channel": "push",
                "title": "Order {{ data.order }}",
                "body": "It has shipped.",
            }
        ],
    )
    return product


def _recipient():
    return {"id": "u1", "push_token": DEVICE}


def _b64(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def test_fcm_v1_with_a_service_account(push, product_client, receiver, settings, key):
    settings.ROWBELL_FCM_API_URL = f"http://127.0.0.1:{receiver.port}"
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    account = {
        "type": "service_account",
        "project_id": "shop-app-42",
        "private_key_id": "k1",
        "private_key": pem,
        "client_email": "rowbell@shop-app-42.iam.gserviceaccount.com",
        "client_id": "1",
        "token_uri": receiver.url("/token"),
    }
    body = _configure(product_client, "push", "fcm", {"service_account": account})
    assert "private_key" not in json.dumps(body)

    access = "ya29." + "x" * 1500  # Google's access tokens can be longer than an attempt's excerpt
    receiver.answer(
        (
            200,
            {"Content-Type": "application/json"},
            json.dumps({"access_token": access, "expires_in": 3599, "token_type": "Bearer"}).encode(),
        ),
        (200, {}, b'{"name": "projects/shop-app-42/messages/0:1"}'),
        (200, {}, b'{"name": "projects/shop-app-42/messages/0:2"}'),
    )
    assert _send(push, recipient=_recipient()).status == DeliveryStatus.SENT
    token_call, send_call = receiver.requests[0], receiver.requests[1]
    # The token request: a JWT bearer grant whose assertion is signed with the service account's key.
    assert token_call["path"] == "/token"
    grant = parse_qs(token_call["body"].decode())
    assert grant["grant_type"] == ["urn:ietf:params:oauth:grant-type:jwt-bearer"]
    header, claims, signature = grant["assertion"][0].split(".")
    assert json.loads(_b64(header)) == {"alg": "RS256", "typ": "JWT", "kid": "k1"}
    claims = json.loads(_b64(claims))
    assert claims["iss"] == account["client_email"] and claims["aud"] == account["token_uri"]
    assert claims["scope"] == "https://www.googleapis.com/auth/firebase.messaging"
    assert claims["exp"] - claims["iat"] == 3600
    key.public_key().verify(
        _b64(signature), f"{header}.{grant['assertion'][0].split('.')[1]}".encode(), padding.PKCS1v15(), hashes.SHA256()
    )
    # The send: messages:send with the access token.
    assert send_call["path"] == "/v1/projects/shop-app-42/messages:send"
    assert send_call["headers"]["authorization"] == f"Bearer {access}"
    assert json.loads(send_call["body"]) == {
        "message": {"token": DEVICE, "notification": {"title": "Order 7", "body": "It has shipped."}}
    }

    _send(push, recipient=_recipient())  # the access token is reused while it is valid
    assert [r["path"] for r in receiver.requests] == ["/token", send_call["path"], send_call["path"]]


def test_fcm_errors(push, product_client, receiver, settings, key):
    settings.ROWBELL_FCM_API_URL = f"http://127.0.0.1:{receiver.port}"
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    _configure(
        product_client,
        "push",
        "fcm",
        {
            "service_account": {
                "type": "service_account",
                "project_id": "shop-app-42",
                "private_key_id": "k1",
                "private_key": pem,
                "client_email": "rowbell@shop-app-42.iam.gserviceaccount.com",
                "token_uri": receiver.url("/token"),
            }
        },
    )
    unregistered = json.dumps(
        {
            "error": {
                "code": 404,
                "message": "Requested entity was not found.",
                "status": "NOT_FOUND",
                "details": [
                    {"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": "UNREGISTERED"}
                ],
            }
        }
    ).encode()
    receiver.answer(
        (200, {}, b'{"access_token": "t", "expires_in": 3599}'),
        (404, {}, unregistered),
        (503, {}, b'{"error": {"code": 503, "status": "UNAVAILABLE", "message": "busy"}}'),
    )
    gone = _send(push, recipient=_recipient())
    assert gone.status == DeliveryStatus.FAILED
    assert gone.last_error == (
        "Firebase Cloud Messaging rejected the message (HTTP 404): UNREGISTERED: Requested entity was not found."
    )
    assert _send(push, recipient=_recipient()).status == DeliveryStatus.QUEUED  # 503: retried

    providers._tokens.clear()
    receiver.answer((400, {}, b'{"error": "invalid_grant", "error_description": "Invalid JWT Signature."}'))
    refused = _send(push, recipient=_recipient())
    assert refused.status == DeliveryStatus.FAILED and "refused the service account (HTTP 400)" in refused.last_error


def test_a_service_account_is_checked_on_save(product_client):
    response = product_client.put(
        "/api/v1/providers/push",
        {
            "provider": "fcm",
            "credentials": {
                "service_account": {
                    "type": "service_account",
                    "project_id": "shop-app-42",
                    "private_key_id": "k1",
                    "private_key": "-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----\n",
                    "client_email": "x@example.com",
                }
            },
        },
        format="json",
    )
    assert response.status_code == 400
    assert response.json()["error"]["fields"] == [
        {"field": "credentials.service_account.private_key", "reason": "Not a PEM private key."}
    ]


def test_a_generic_push_gateway_and_a_recipient_without_a_token(push, product_client, receiver):
    _configure(
        product_client,
        "push",
        "http",
        {"headers": {"X-Api-Key": "k"}},
        {
            "url": receiver.url("/push"),
            "fields": {"device": "{{ to }}", "heading": "{{ title }}", "content": "{{ body }}"},
        },
    )
    assert _send(push, recipient=_recipient()).status == DeliveryStatus.SENT
    assert json.loads(receiver.requests[0]["body"]) == {
        "device": DEVICE,
        "heading": "Order 7",
        "content": "It has shipped.",
    }
    assert receiver.requests[0]["headers"]["x-api-key"] == "k"
    skipped = _send(push, recipient={"id": "u2"})
    assert skipped.status == DeliveryStatus.SKIPPED and skipped.last_error.startswith("The recipient has no push token")


def test_a_push_goes_to_every_device_of_the_recipient(push, product_client, receiver):
    _configure(product_client, "push", "http", {}, {"url": receiver.url("/push"), "fields": {"device": "{{ to }}"}})
    receiver.answer(200, (410, {}, b"gone"), 200)
    delivery = _send(push, recipient={"id": "u1", "push_tokens": ["a", "b", "c", "a"]})
    assert delivery.status == DeliveryStatus.SENT and delivery.target == "3 devices"
    assert sorted(json.loads(r["body"])["device"] for r in receiver.requests) == ["a", "b", "c"]
    attempt = delivery.attempts.get()
    assert attempt.response_excerpt.startswith("2 of 3 devices accepted it. Refused: ")

    # No device accepts it, one of them for a passing reason: retried (none has had it yet).
    receiver.answer((410, {}, b"gone"), (503, {}, b"busy"))
    retried = _send(push, recipient={"id": "u1", "push_tokens": ["a", "b"]})
    assert retried.status == DeliveryStatus.QUEUED and retried.last_error.startswith(
        "No device accepted it (2 refused)"
    )
    # Every device refuses it for good: failed.
    receiver.answer((410, {}, b"gone"), (400, {}, b"bad token"))
    assert _send(push, recipient={"id": "u1", "push_tokens": ["a", "b"]}).status == DeliveryStatus.FAILED


def test_a_recipients_own_chat_webhook_and_checked_recipient_fields(product, product_client, receiver):
    factories.make_workflow(
        product, key="w", steps=[{"id": "ping", "type": "notify", "channel": "chat", "text": "Order {{ data.order }}"}]
    )
    _configure(product_client, "chat", "slack", {"webhook_url": receiver.url("/services/ours")})
    _send(product, recipient={"id": "acme", "chat_webhook": receiver.url("/services/theirs")})
    _send(product, recipient={"id": "u2"})
    assert [r["path"] for r in receiver.requests] == ["/services/theirs", "/services/ours"]

    response = product_client.post(
        "/api/v1/trigger",
        {"workflow": "w", "to": [{"id": "x", "chat_webhook": "http://10.0.0.8/hook", "push_tokens": ["ok", ""]}]},
        format="json",
    )
    assert response.status_code == 400
    assert {f["field"] for f in response.json()["error"]["fields"]} == {"to[0].chat_webhook", "to[0].push_tokens"}
