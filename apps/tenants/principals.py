from __future__ import annotations

from dataclasses import dataclass

from .models import KeyScope, Organization, Product


@dataclass(frozen=True)
class Tenant:
    """Who an API call acts as: set as `request.user` by ApiKeyAuthentication.

    Selectors take a Tenant and scope every query by it, so no API can forget the scoping.
    """

    scope: str
    key_prefix: str
    product: Product | None = None
    organization: Organization | None = None

    is_authenticated = True
    is_anonymous = False

    @property
    def product_id(self):
        return self.product.id if self.product else None

    @property
    def organization_id(self):
        return self.organization.id if self.organization else None

    @property
    def is_platform(self) -> bool:
        return self.scope == KeyScope.PLATFORM

    @property
    def actor(self) -> str:
        return f"key:{self.key_prefix}"
