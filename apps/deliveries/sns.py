"""Amazon SNS message signatures: proof that an SES event (delivered through an SNS topic) comes from AWS.

Follows https://docs.aws.amazon.com/sns/latest/dg/sns-verify-signature-of-message.html: the signing
certificate is fetched over https from an `sns.<region>.amazonaws.com` host only; the string to sign is
the message's fields in the documented order, each as "Name\\nvalue\\n"; the signature is RSA PKCS#1 v1.5
over its SHA1 (SignatureVersion 1) or SHA256 (SignatureVersion 2) digest. The TopicArn check is the
caller's (a valid signature only says that some AWS account's topic sent it).
"""

from __future__ import annotations

import base64
import binascii
import re
import threading
from urllib.parse import urlsplit
from urllib.request import urlopen

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from django.conf import settings

# The fields signed, in the order signed, per message type (a missing Subject is left out).
_SIGNED_FIELDS = {
    "Notification": ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
    "SubscriptionConfirmation": ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"),
    "UnsubscribeConfirmation": ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"),
}
_DIGESTS = {"1": hashes.SHA1, "2": hashes.SHA256}
_CERT_HOST = re.compile(r"^sns\.[a-z0-9-]+\.amazonaws\.com(\.cn)?$")

_keys: dict[str, RSAPublicKey] = {}
_keys_lock = threading.Lock()
_KEYS_KEPT = 32


class SnsSignatureInvalid(Exception):
    """The message is not provably from Amazon SNS; `str()` says why."""


def string_to_sign(message: dict) -> bytes:
    """The bytes SNS signed for `message` (a parsed SNS JSON body). Raises SnsSignatureInvalid for an
    unknown message type or a missing required field."""
    fields = _SIGNED_FIELDS.get(message.get("Type"))
    if fields is None:
        raise SnsSignatureInvalid(f"Unknown SNS message type {message.get('Type')!r}.")
    lines = []
    for name in fields:
        value = message.get(name)
        if value is None:
            if name == "Subject":
                continue
            raise SnsSignatureInvalid(f"The SNS message has no {name}.")
        lines.append(f"{name}\n{value}\n")
    return "".join(lines).encode()


def signing_cert_url_check(url) -> None:
    """Raises SnsSignatureInvalid unless `url` is an https URL of a `.pem` file on an SNS host."""
    parts = urlsplit(url) if isinstance(url, str) else None
    if (parts is None or parts.scheme != "https" or not _CERT_HOST.match(parts.hostname or "")
            or parts.port not in (None, 443) or parts.username or not parts.path.endswith(".pem")):
        raise SnsSignatureInvalid("SigningCertURL is not an https .pem URL on an sns.<region>.amazonaws.com host.")


def _certificate_pem(url: str) -> bytes:
    """The PEM at `url` (already checked); TLS verifies that the host is AWS's."""
    with urlopen(url, timeout=settings.ROWBELL_HTTP_TIMEOUT) as response:  # noqa: S310 (https only, checked)
        return response.read(64 * 1024)


def _public_key(url: str) -> RSAPublicKey:
    with _keys_lock:
        key = _keys.get(url)
    if key is not None:
        return key
    try:
        key = x509.load_pem_x509_certificate(_certificate_pem(url)).public_key()
    except (OSError, ValueError) as exc:
        raise SnsSignatureInvalid(f"The SNS signing certificate cannot be read: {exc}") from exc
    if not isinstance(key, RSAPublicKey):
        raise SnsSignatureInvalid("The SNS signing certificate does not hold an RSA key.")
    with _keys_lock:
        if len(_keys) >= _KEYS_KEPT:  # AWS rotates certificates rarely: an unbounded cache is not needed
            _keys.clear()
        _keys[url] = key
    return key


def sns_signature_verify(message: dict) -> None:
    """Check that `message` (a parsed SNS JSON body: Notification, SubscriptionConfirmation or
    UnsubscribeConfirmation) was signed by Amazon SNS. Returns None; raises SnsSignatureInvalid (an
    unsupported SignatureVersion, a certificate URL off AWS, a bad or missing signature)."""
    if not isinstance(message, dict):
        raise SnsSignatureInvalid("The SNS message is not a JSON object.")
    digest = _DIGESTS.get(str(message.get("SignatureVersion")))
    if digest is None:
        raise SnsSignatureInvalid(f"Unsupported SignatureVersion {message.get('SignatureVersion')!r}.")
    signed = string_to_sign(message)
    signing_cert_url_check(message.get("SigningCertURL"))
    try:
        signature = base64.b64decode(message.get("Signature") or "", validate=True)
    except (binascii.Error, ValueError) as exc:
        raise SnsSignatureInvalid("The SNS Signature is not base64.") from exc
    try:
        _public_key(message["SigningCertURL"]).verify(signature, signed, padding.PKCS1v15(), digest())
    except InvalidSignature as exc:
        raise SnsSignatureInvalid("The SNS signature does not match the message.") from exc
