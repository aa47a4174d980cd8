import threading
from collections import OrderedDict
from dataclasses import dataclass

from django.utils.crypto import get_random_string
from rest_framework import authentication, exceptions

from .models import ApiKey
from .principals import Tenant
from .throttles import auth_failure_record

KEYWORD = "Api-Key"


@dataclass(frozen=True)
class KeyMaterial:
    """What never changes about a key once issued: its hash and its owner. (Revocation and expiry
    do change, so they are never cached.)"""

    id: str
    hashed_key: str
    scope: str
    product_id: object
    organization_id: object


class _MaterialCache:
    def __init__(self, size: int = 10_000):
        self._items: OrderedDict[str, KeyMaterial] = OrderedDict()
        self._size = size
        self._lock = threading.Lock()

    def get(self, prefix: str) -> KeyMaterial | None:
        with self._lock:
            item = self._items.get(prefix)
            if item is not None:
                self._items.move_to_end(prefix)
            return item

    def put(self, prefix: str, material: KeyMaterial) -> None:
        with self._lock:
            self._items[prefix] = material
            if len(self._items) > self._size:
                self._items.popitem(last=False)


key_material_cache = _MaterialCache()


# djangorestframework-api-key's own hasher (SHA-512, no salt), without make_password's dispatch.
_HASHER = ApiKey.objects.key_generator.preferred_hasher
# Checked against when a prefix matches no live key, so that an unknown prefix costs the same work as a
# known one with a wrong secret and the answer's timing does not tell which prefixes exist.
_DUMMY_HASH = _HASHER.encode(get_random_string(41), "")


def _verify(raw: str, hashed_key: str) -> bool:
    return _HASHER.verify(raw, hashed_key)  # constant-time comparison


def _refuse(request, prefix: str | None, message: str = "Invalid API key."):
    """Count the failure (apps/tenants/throttles.py) and raise: 429 once the client's address or the prefix is
    over its limit of failures, else 401."""
    raise auth_failure_record(request, prefix) or exceptions.AuthenticationFailed(message)


def _split(request) -> tuple[str, str] | None:
    header = request.META.get("HTTP_AUTHORIZATION", "")
    if not header:
        return None
    keyword, _, raw = header.partition(" ")
    raw = raw.strip()
    if keyword != KEYWORD or not raw:
        _refuse(request, None, "Send the key as 'Authorization: Api-Key <key>'.")
    prefix, dot, _ = raw.partition(".")
    if not dot:
        _refuse(request, None)
    return prefix, raw


class ApiKeyAuthentication(authentication.BaseAuthentication):
    """`Authorization: Api-Key <prefix>.<secret>` -> a Tenant.

    One indexed query by prefix, then a SHA-512 comparison in constant time (against a dummy hash when
    no live key has the prefix: the same work either way); revocation and expiry are read on every
    request, so a revoked key stops working at once. A failure answers 401, or 429 once the client's
    address or the prefix has failed too often (apps/tenants/throttles.py).
    """

    def authenticate(self, request):
        parts = _split(request)
        if parts is None:
            return None
        prefix, raw = parts
        key = ApiKey.objects.filter(prefix=prefix, revoked=False).first()
        matched = _verify(raw, key.hashed_key if key is not None else _DUMMY_HASH)
        if key is None or not matched or key.has_expired:
            _refuse(request, prefix)
        key_material_cache.put(
            prefix,
            KeyMaterial(
                id=key.id,
                hashed_key=key.hashed_key,
                scope=key.scope,
                product_id=key.product_id,
                organization_id=key.organization_id,
            ),
        )
        tenant = Tenant(
            scope=key.scope,
            key_prefix=prefix,
            product_id=key.product_id,
            organization_id=key.organization_id,
            key_id=key.id,
        )
        return tenant, key

    def authenticate_header(self, request):
        return KEYWORD


class DeferredLiveCheckAuthentication(ApiKeyAuthentication):
    """For the trigger endpoint, where one SQL statement does all the work: the key's hash is checked
    against cached key material, and its revocation and expiry are checked inside that statement
    (see `trigger_create`), so that a revoked key still stops working at once, without a query of
    its own. Anything else (an unknown prefix, a key not yet cached, a wrong secret) takes the ordinary
    path after the same hash check, so that a cached prefix with a wrong secret and an unknown prefix
    cost the same work: one hash check here, one query and one hash check there."""

    def authenticate(self, request):
        parts = _split(request)
        if parts is None:
            return None
        prefix, raw = parts
        material = key_material_cache.get(prefix)
        matched = _verify(raw, material.hashed_key if material is not None else _DUMMY_HASH)
        if material is None or not matched:
            return super().authenticate(request)
        tenant = Tenant(
            scope=material.scope,
            key_prefix=prefix,
            product_id=material.product_id,
            organization_id=material.organization_id,
            key_id=material.id,
        )
        return tenant, None
