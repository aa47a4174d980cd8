"""Who may call an API view: the scope of the API key it was called with.

A key's scope (platform, product, organization) is set on the principal by the tenants app's
authentication (`request.user.scope`); these checks read only that, so any app's API can use them.
"""

from django.db import models
from rest_framework.permissions import BasePermission


class KeyScope(models.TextChoices):
    """What an API key acts for: the whole installation, one product, or one of a product's organizations."""

    # Each label is the name title-cased, Django's default: "Platform", "Product", "Organization".
    PLATFORM = "platform"
    PRODUCT = "product"
    ORGANIZATION = "organization"


class _ScopePermission(BasePermission):
    scopes: tuple[str, ...] = ()
    message = "This API key cannot call this endpoint."

    def has_permission(self, request, view):
        scope = getattr(request.user, "scope", None)
        return scope in KeyScope.values and (not self.scopes or scope in self.scopes)


class IsTenant(_ScopePermission):
    """Any valid key."""


class IsPlatform(_ScopePermission):
    scopes = (KeyScope.PLATFORM,)
    message = "This endpoint needs a platform key."


class IsProduct(_ScopePermission):
    scopes = (KeyScope.PRODUCT,)
    message = "This endpoint needs a product key."


class IsProductOrOrganization(_ScopePermission):
    scopes = (KeyScope.PRODUCT, KeyScope.ORGANIZATION)
    message = "This endpoint needs a product or organization key."


class IsPlatformOrProduct(_ScopePermission):
    scopes = (KeyScope.PLATFORM, KeyScope.PRODUCT)
    message = "This endpoint needs a platform or product key."
