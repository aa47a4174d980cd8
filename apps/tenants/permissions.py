from rest_framework.permissions import BasePermission

from .models import KeyScope
from .principals import Tenant


class _ScopePermission(BasePermission):
    scopes: tuple[str, ...] = ()
    message = "This API key cannot call this endpoint."

    def has_permission(self, request, view):
        tenant = request.user
        return isinstance(tenant, Tenant) and (not self.scopes or tenant.scope in self.scopes)


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
