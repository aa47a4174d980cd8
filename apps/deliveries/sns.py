"""Amazon SNS message signatures: proof that an SES event (delivered through an SNS topic) comes from AWS.

Follows https://docs.aws.amazon.com/sns/latest/dg/sns-verify-signature-of-message.html: the signing
certificate is fetched over https from an `sns.<region>.amazonaws.com` host only (`.amazonaws.com.cn` in
the China regions), in the region of the message's TopicArn; the string to sign is the message's fields
in the documented order, each as "Name\\nvalue\\n"; the signature is RSA PKCS#1 v1.5 over its SHA1
(SignatureVersion 1) or SHA256 (SignatureVersion 2) digest. The TopicArn check is the caller's (a valid
signature only says that some AWS account's topic sent it).

Every field read from the message must be a string: a message is a parsed JSON body from anyone, so
anything else is refused as SnsSignatureInvalid before it is used.
"""

from __future__ import annotations

import base64
import binascii
import re
import threading
import time
from typing import Literal, overload
from urllib.error import HTTPError
from urllib.parse import urlsplit
from urllib.request import HTTPRedirectHandler, build_opener

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
# SNS's regional endpoints (https://docs.aws.amazon.com/general/latest/gr/sns.html): `sns.<region>` where a
# region is `us-east-1`, `ap-southeast-3`, `us-gov-west-1`, `cn-north-1`... Anything else on amazonaws.com
# (an S3 bucket named "sns": `sns.s3.amazonaws.com`, `sns.s3-us-west-2.amazonaws.com`) is not SNS. The
# isolated regions' endpoints are not on amazonaws.com and cannot reach this service: not accepted.
_CERT_HOST = re.compile(r"^sns\.(?P<region>[a-z]{2}(?:-gov)?-[a-z]+-\d)\.amazonaws\.com(?P<cn>\.cn)?$")
# arn:<partition>:sns:<region>:<account>:<topic>
_TOPIC_ARN = re.compile(r"^arn:aws(?:-cn|-us-gov)?:sns:(?P<region>[a-z0-9-]+):\d{12}:[A-Za-z0-9_.-]{1,256}$")

CERT_MAX_BYTES = 16 * 1024  # an SNS signing certificate is under 2 KB of PEM
CERT_FETCH_TIMEOUT = 5.0  # seconds, at most: the fetch runs inside a web request
_KEYS_KEPT = 32  # AWS rotates certificates rarely: a few URLs cover every topic's region
_FAILURE_SECONDS = 60.0  # a certificate that could not be read is not fetched again for this long

_keys: dict[str, RSAPublicKey] = {}
_failures: dict[str, tuple[float, str]] = {}  # url -> (monotonic time of failure, why)
_keys_lock = threading.Lock()


class SnsSignatureInvalid(Exception):
    """The message is not provably from Amazon SNS; `str()` says why."""


@overload
def _text(message: dict, name: str, *, required: Literal[True] = True) -> str: ...
@overload
def _text(message: dict, name: str, *, required: bool) -> str | None: ...
def _text(message: dict, name: str, *, required: bool = True) -> str | None:
    """`message[name]` when it is a string; None when it is absent and not `required`. Raises
    SnsSignatureInvalid for a missing required field or a value of another JSON type."""
    value = message.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str):
        raise SnsSignatureInvalid(f"The SNS message's {name} is missing or not a string.")
    return value


def _signed_fields(message) -> tuple[str, ...]:
    """The names of the fields signed in `message`, once its Type and each of them is checked to be a
    string (Subject may be absent). Raises SnsSignatureInvalid."""
    if not isinstance(message, dict):
        raise SnsSignatureInvalid("The SNS message is not a JSON object.")
    message_type = _text(message, "Type")
    if message_type not in _SIGNED_FIELDS:
        raise SnsSignatureInvalid(f"Unknown SNS message type {message_type[:40]!r}.")
    for name in _SIGNED_FIELDS[message_type]:
        _text(message, name, required=name != "Subject")
    return _SIGNED_FIELDS[message_type]


def message_check(message) -> None:
    """Check the shape of `message` (a parsed SNS JSON body) before anything else reads it: a JSON object
    whose Type is a known SNS message type and whose every field that is signed or used to verify
    (SignatureVersion, Signature, SigningCertURL and the signed fields of its type) is a string.
    Returns None; raises SnsSignatureInvalid saying what is wrong."""
    _signed_fields(message)
    for name in ("SignatureVersion", "Signature", "SigningCertURL"):
        _text(message, name)


def string_to_sign(message: dict) -> bytes:
    """The bytes SNS signed for `message` (a parsed SNS JSON body). Raises SnsSignatureInvalid for a
    message that is not a JSON object, of an unknown Type, or whose signed fields are missing or not
    strings."""
    lines = []
    for name in _signed_fields(message):
        value = message.get(name)
        if value is not None:  # only Subject may be missing (_signed_fields)
            lines.append(f"{name}\n{value}\n")
    return "".join(lines).encode()


def topic_region(topic_arn: str) -> str:
    """The region of an SNS topic ARN (`arn:aws:sns:eu-west-1:123456789012:name` → `eu-west-1`). Raises
    SnsSignatureInvalid for anything that is not an SNS topic ARN."""
    match = _TOPIC_ARN.match(topic_arn) if isinstance(topic_arn, str) else None
    if match is None:
        raise SnsSignatureInvalid("TopicArn is not an SNS topic ARN.")
    return match["region"]


def signing_cert_url_check(url, *, region: str | None = None) -> None:
    """Raises SnsSignatureInvalid unless `url` is an https URL of a `.pem` file on SNS's endpoint of a
    region (`sns.<region>.amazonaws.com`, `sns.cn-<...>.amazonaws.com.cn`), and, when `region` is given,
    of that region (the TopicArn's)."""
    parts = urlsplit(url) if isinstance(url, str) else None
    try:
        port = parts.port if parts is not None else None
    except ValueError:  # a port that is not a number
        parts = None
    match = _CERT_HOST.match(parts.hostname or "") if parts is not None else None
    if (
        parts is None
        or match is None
        or parts.scheme != "https"
        or port not in (None, 443)
        or parts.username
        or parts.password is not None
        or not parts.path.endswith(".pem")
        or bool(match["cn"]) != match["region"].startswith("cn-")
    ):
        raise SnsSignatureInvalid("SigningCertURL is not an https .pem URL on an sns.<region>.amazonaws.com host.")
    if region is not None and match["region"] != region:
        raise SnsSignatureInvalid("SigningCertURL is not in the region of the SNS topic.")


class _NoRedirects(HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):
        raise HTTPError(req.full_url, code, "A redirect is not followed for an SNS certificate.", headers, fp)


_opener = build_opener(_NoRedirects)


def bounded_get(url: str, *, max_bytes: int = CERT_MAX_BYTES, timeout: float = CERT_FETCH_TIMEOUT) -> bytes:
    """The body of a GET of `url`: no redirect followed, at most `max_bytes`, `timeout` seconds per socket
    operation. Raises OSError (urllib's errors are OSErrors) for a failure, a redirect or a larger body."""
    with _opener.open(url, timeout=timeout) as response:  # the URL's scheme and host are the caller's check
        body = response.read(max_bytes + 1)
    if len(body) > max_bytes:
        raise OSError(f"The answer is larger than {max_bytes} bytes.")
    return body


def _certificate_pem(url: str) -> bytes:
    """The PEM at `url` (already checked: https on an SNS host, so TLS verifies that the host is AWS's)."""
    return bounded_get(url, timeout=min(CERT_FETCH_TIMEOUT, settings.ROWBELL_HTTP_TIMEOUT))


def _public_key(url: str) -> RSAPublicKey:
    """The RSA key of the certificate at `url`, kept once read; a failure is remembered for
    _FAILURE_SECONDS, so that repeated calls naming a certificate that cannot be read fetch it once."""
    now = time.monotonic()
    with _keys_lock:
        key, failed = _keys.get(url), _failures.get(url)
    if key is not None:
        return key
    if failed is not None and now - failed[0] < _FAILURE_SECONDS:
        raise SnsSignatureInvalid(failed[1])
    try:
        public = x509.load_pem_x509_certificate(_certificate_pem(url)).public_key()
        if not isinstance(public, RSAPublicKey):
            raise ValueError("it does not hold an RSA key")
        key = public
    except (OSError, ValueError) as exc:
        why = f"The SNS signing certificate cannot be read: {exc}"
        with _keys_lock:
            if len(_failures) >= _KEYS_KEPT:
                _failures.clear()
            _failures[url] = (now, why)
        raise SnsSignatureInvalid(why) from exc
    with _keys_lock:
        if len(_keys) >= _KEYS_KEPT:
            _keys.clear()
        _keys[url] = key
        _failures.pop(url, None)
    return key


def cache_clear() -> None:
    """Forget every certificate key and remembered failure (tests; a certificate revoked by AWS)."""
    with _keys_lock:
        _keys.clear()
        _failures.clear()


def sns_signature_verify(message) -> None:
    """Check that `message` (a parsed SNS JSON body: Notification, SubscriptionConfirmation or
    UnsubscribeConfirmation) was signed by Amazon SNS. Returns None; raises SnsSignatureInvalid (a
    malformed message, an unsupported SignatureVersion, a TopicArn that is not an SNS topic's, a
    certificate URL off SNS or in another region than the topic, a bad or missing signature). The
    certificate is fetched only once all of that holds."""
    message_check(message)
    digest = _DIGESTS.get(message["SignatureVersion"])
    if digest is None:
        raise SnsSignatureInvalid(f"Unsupported SignatureVersion {message['SignatureVersion'][:8]!r}.")
    signed = string_to_sign(message)
    signing_cert_url_check(message["SigningCertURL"], region=topic_region(message["TopicArn"]))
    try:
        signature = base64.b64decode(message["Signature"], validate=True)
    except (binascii.Error, ValueError) as exc:
        raise SnsSignatureInvalid("The SNS Signature is not base64.") from exc
    if not signature:
        raise SnsSignatureInvalid("The SNS message has no Signature.")
    try:
        _public_key(message["SigningCertURL"]).verify(signature, signed, padding.PKCS1v15(), digest())
    except InvalidSignature as exc:
        raise SnsSignatureInvalid("The SNS signature does not match the message.") from exc
