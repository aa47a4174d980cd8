"""Push providers: Firebase Cloud Messaging, and any HTTP gateway."""

from __future__ import annotations

import base64
import hashlib
import json
from urllib.parse import urlencode

from django.conf import settings
from rest_framework import serializers

from apps.core import fields as strict
from apps.deliveries import outbound

from ..base import DeliveryError
from ..providers import HttpGateway, Provider, SafeUrlField, json_post, provider_register


class HttpPush(HttpGateway):
    __doc__ = HttpGateway.__doc__
    channel, title = "push", "The push gateway"


class _ServiceAccount(serializers.Serializer):
    type = strict.ChoiceField(choices=["service_account"])
    project_id = strict.RegexField(
        r"^[a-z][a-z0-9-]{4,61}[a-z0-9]$", error_messages={"invalid": "A Google Cloud project id."}
    )
    private_key_id = strict.CharField(max_length=100)
    private_key = strict.CharField(max_length=10_000, trim_whitespace=False)
    client_email = strict.EmailField()
    token_uri = SafeUrlField(default="https://oauth2.googleapis.com/token")

    def validate_private_key(self, value):
        from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
        from cryptography.hazmat.primitives.serialization import load_pem_private_key

        try:
            key = load_pem_private_key(value.encode(), password=None)
        except (ValueError, TypeError) as exc:
            raise serializers.ValidationError("Not a PEM private key.") from exc
        if not isinstance(key, RSAPrivateKey):
            raise serializers.ValidationError("Must be an RSA key.")
        return value

    def to_internal_value(self, data):
        # A downloaded service-account file has more fields (client_id, auth_uri...): they are not needed.
        if isinstance(data, dict):
            data = {k: v for k, v in data.items() if k in self.fields}
        return super().to_internal_value(data)


_tokens: dict[str, tuple[str, float]] = {}


class Fcm(Provider):
    """Firebase Cloud Messaging HTTP v1: POST /v1/projects/{project_id}/messages:send with an OAuth 2.0
    access token, obtained from the service account's own token endpoint with a signed JWT
    (RS256, scope firebase.messaging) and kept until shortly before it expires."""

    channel, name, title = "push", "fcm", "Firebase Cloud Messaging"
    ok_statuses = (200,)
    SCOPE = "https://www.googleapis.com/auth/firebase.messaging"

    class Credentials(serializers.Serializer):
        service_account = _ServiceAccount()

    def _access_token(self, account: dict) -> str:
        import time

        # Cached per whole account (key and token endpoint included): two configurations that only share
        # an email and key id never share a token.
        key = hashlib.sha256(json.dumps(account, sort_keys=True).encode()).hexdigest()
        cached = _tokens.get(key)
        if cached and cached[1] > time.time() + 300:
            return cached[0]
        now = int(time.time())
        assertion = _jwt_rs256(
            {"alg": "RS256", "typ": "JWT", "kid": account["private_key_id"]},
            {
                "iss": account["client_email"],
                "scope": self.SCOPE,
                "aud": account["token_uri"],
                "iat": now,
                "exp": now + 3600,
            },
            account["private_key"],
        )
        try:
            answer = outbound.post(
                account["token_uri"],
                urlencode(
                    {"grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer", "assertion": assertion}
                ).encode(),
                {"Content-Type": "application/x-www-form-urlencoded"},
            )
        except outbound.OutboundError as exc:
            raise DeliveryError(f"Cannot get an access token: {exc.message}", permanent=exc.permanent) from exc
        if answer.status != 200:
            # 400 invalid_grant / 401 invalid_client: the service account is wrong or revoked.
            raise DeliveryError(
                f"Google refused the service account (HTTP {answer.status}): {answer.excerpt[:300]}",
                permanent=answer.status in (400, 401, 403),
                status_code=answer.status,
            )
        try:
            grant = json.loads(answer.body)
            token, lifetime = str(grant["access_token"]), int(grant.get("expires_in", 3600))
        except (ValueError, KeyError, TypeError) as exc:
            raise DeliveryError(
                f"Google's token endpoint answered without an access token: {answer.excerpt[:200]}",
                status_code=answer.status,
            ) from exc
        _tokens[key] = (token, time.time() + min(lifetime, 3600))
        return token

    def request(self, payload, credentials, options):
        account = credentials["service_account"]
        message = {"token": payload["to"], "notification": {"title": payload["title"], "body": payload["body"]}}
        return json_post(
            f"{settings.ROWBELL_FCM_API_URL}/v1/projects/{account['project_id']}/messages:send",
            {"message": message},
            {"Authorization": f"Bearer {self._access_token(account)}"},
        )

    def refusal(self, answer):
        try:  # {"error": {"code": 404, "message": "...", "status": "NOT_FOUND", "details": [{"errorCode": "UNREGISTERED"}]}}
            error = json.loads(answer.excerpt)["error"]
            codes = [d.get("errorCode") for d in error.get("details", []) if d.get("errorCode")]
            return f"{codes[0] if codes else error.get('status')}: {error.get('message')}"
        except (ValueError, KeyError, TypeError, AttributeError):
            return super().refusal(answer)


def _jwt_rs256(header: dict, claims: dict, private_key_pem: str) -> str:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    signing_input = (
        f"{b64(json.dumps(header, separators=(',', ':')).encode())}."
        f"{b64(json.dumps(claims, separators=(',', ':')).encode())}"
    )
    key = load_pem_private_key(private_key_pem.encode(), password=None)
    assert isinstance(key, RSAPrivateKey)  # _ServiceAccount accepts an RSA key only
    signature = key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{signing_input}.{b64(signature)}"


provider_register(HttpPush())
provider_register(Fcm())
