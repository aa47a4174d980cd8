from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from .models import KeyScope, Organization, Product


@dataclass(frozen=True)
class Tenant:
    """Who an API call acts as: set as `request.user` by ApiKeyAuthentication.

    Selectors take a Tenant and scope every query by it, so no API can forget the scoping. `key_id` lets
    a service re-check the key's revocation and expiry in its own statement (the trigger path).
    """

    scope: str
    key_prefix: str
    product_id: object = None
    organization_id: object = None
    key_id: str = ""

    is_authenticated = True
    is_anonymous = False

    @cached_property
    def product(self) -> Product | None:
        return Product.objects.get(id=self.product_id) if self.product_id else None

    @cached_property
    def organization(self) -> Organization | None:
        return Organization.objects.get(id=self.organization_id) if self.organization_id else None

    @property
    def is_platform(self) -> bool:
        return self.scope == KeyScope.PLATFORM

    @property
    def actor(self) -> str:
        return f"key:{self.key_prefix}"

    def scoped(self, queryset):
        """Rows of a model with `product` and `organization`: a product key sees its product's (its
        organizations' included), an organization key only its own."""
        queryset = queryset.filter(product_id=self.product_id)
        if self.organization_id:
            queryset = queryset.filter(organization_id=self.organization_id)
        return queryset

    @classmethod
    def of(
        cls,
        *,
        product: Product | None = None,
        organization: Organization | None = None,
        scope: str = "",
        key_prefix: str = "",
    ) -> Tenant:
        scope = scope or (KeyScope.ORGANIZATION if organization else KeyScope.PRODUCT)
        tenant = cls(
            scope=scope,
            key_prefix=key_prefix,
            product_id=product.id if product else None,
            organization_id=organization.id if organization else None,
        )
        tenant.__dict__["product"] = product
        tenant.__dict__["organization"] = organization
        return tenant
