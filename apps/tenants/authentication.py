from rest_framework import authentication, exceptions

from .models import ApiKey
from .principals import Tenant

KEYWORD = "Api-Key"


class ApiKeyAuthentication(authentication.BaseAuthentication):
    """`Authorization: Api-Key <prefix>.<secret>` -> a Tenant.

    One indexed query by prefix (with the owner joined), then a SHA-512 comparison in constant time.
    """

    def authenticate(self, request):
        header = request.META.get("HTTP_AUTHORIZATION", "")
        if not header:
            return None
        keyword, _, raw = header.partition(" ")
        if keyword != KEYWORD or not raw.strip():
            raise exceptions.AuthenticationFailed("Send the key as 'Authorization: Api-Key <key>'.")
        raw = raw.strip()
        prefix, dot, _ = raw.partition(".")
        if not dot:
            raise exceptions.AuthenticationFailed("Invalid API key.")
        key = (
            ApiKey.objects.select_related("product", "organization")
            .filter(prefix=prefix, revoked=False)
            .first()
        )
        if key is None or not key.is_valid(raw) or key.has_expired:
            raise exceptions.AuthenticationFailed("Invalid API key.")
        return Tenant(scope=key.scope, key_prefix=key.prefix, product=key.product, organization=key.organization), key

    def authenticate_header(self, request):
        return KEYWORD
