import threading
from collections import OrderedDict
from dataclasses import dataclass

from django.utils.crypto import constant_time_compare
from rest_framework import authentication, exceptions

from .models import ApiKey
from .principals import Tenant

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


def _hash(raw: str) -> str:
    # djangorestframework-api-key's own hasher (SHA-512, no salt), without make_password's dispatch.
    return ApiKey.objects.key_generator.preferred_hasher.encode(raw, "")


def _split(request) -> tuple[str, str] | None:
    header = request.META.get("HTTP_AUTHORIZATION", "")
    if not header:
        return None
    keyword, _, raw = header.partition(" ")
    raw = raw.strip()
    if keyword != KEYWORD or not raw:
        raise exceptions.AuthenticationFailed("Send the key as 'Authorization: Api-Key <key>'.")
    prefix, dot, _ = raw.partition(".")
    if not dot:
        raise exceptions.AuthenticationFailed("Invalid API key.")
    return prefix, raw


class ApiKeyAuthentication(authentication.BaseAuthentication):
    """`Authorization: Api-Key <prefix>.<secret>` -> a Tenant.

    One indexed query by prefix, then a SHA-512 comparison in constant time; revocation and expiry
    are read on every request, so a revoked key stops working at once.
    """

    def authenticate(self, request):
        parts = _split(request)
        if parts is None:
            return None
        prefix, raw = parts
        key = ApiKey.objects.filter(prefix=prefix, revoked=False).first()
        if key is None or not constant_time_compare(key.hashed_key, _hash(raw)) or key.has_expired:
            raise exceptions.AuthenticationFailed("Invalid API key.")
        key_material_cache.put(prefix, KeyMaterial(id=key.id, hashed_key=key.hashed_key, scope=key.scope,
                                                   product_id=key.product_id, organization_id=key.organization_id))
        tenant = Tenant(scope=key.scope, key_prefix=prefix, product_id=key.product_id,
                        organization_id=key.organization_id, key_id=key.id)
        return tenant, key

    def authenticate_header(self, request):
        return KEYWORD


class DeferredLiveCheckAuthentication(ApiKeyAuthentication):
    """For the trigger endpoint, where one SQL statement does all the work: the key's hash is checked
    against cached key material, and its revocation and expiry are checked inside that statement
    (see `trigger_create`), so that a revoked key still stops working at once, without a query of
    its own. An unknown prefix takes the ordinary path."""

    def authenticate(self, request):
        parts = _split(request)
        if parts is None:
            return None
        prefix, raw = parts
        material = key_material_cache.get(prefix)
        if material is None:
            return super().authenticate(request)
        if not constant_time_compare(material.hashed_key, _hash(raw)):
            raise exceptions.AuthenticationFailed("Invalid API key.")
        tenant = Tenant(scope=material.scope, key_prefix=prefix, product_id=material.product_id,
                        organization_id=material.organization_id, key_id=material.id)
        return tenant, None
