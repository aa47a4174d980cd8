from django.db.models import Q, QuerySet

from apps.core.exceptions import NotFound

from .models import ApiKey, KeyScope, Organization, Product
from .principals import Tenant


def product_get(*, tenant: Tenant, product_id) -> Product:
    """A platform key sees every product, a product key only itself; anything else is 'not found'."""
    qs = Product.objects.all()
    if not tenant.is_platform:
        qs = qs.filter(id=tenant.product_id) if tenant.scope == KeyScope.PRODUCT else qs.none()
    product = qs.filter(id=product_id).first()
    if product is None:
        raise NotFound("Product not found.")
    return product


def organization_list(*, tenant: Tenant) -> QuerySet:
    qs = Organization.objects.select_related("product")
    if tenant.is_platform:
        return qs
    if tenant.organization_id:
        return qs.filter(id=tenant.organization_id)
    return qs.filter(product_id=tenant.product_id)


def organization_get(*, tenant: Tenant, organization_id) -> Organization:
    organization = organization_list(tenant=tenant).filter(id=organization_id).first()
    if organization is None:
        raise NotFound("Organization not found.")
    return organization


def organizations_by_external_id(*, product_id, external_ids: list[str]) -> dict[str, Organization]:
    """The product's organizations whose external id is one of `external_ids`, keyed by it, in one query.

    For routing a customer row to the organization that owns it: values compare as text, so the caller
    passes `str(value)` (a row's integer 42 finds external id "42"). Ids no organization of `product_id` has
    are absent from the answer; other products' organizations are never returned. Internal: callers outside
    the API scope by product themselves (an API would go through `organization_list(tenant=...)`).
    """
    wanted = {external_id for external_id in external_ids if external_id}
    if not wanted:
        return {}
    # Served by the partial unique index on (product_id, external_id).
    found = Organization.objects.filter(product_id=product_id, external_id__in=wanted)
    return {organization.external_id: organization for organization in found}


def api_key_list(*, tenant: Tenant) -> QuerySet:
    """Keys the caller may see and revoke: platform keys for a platform key, a product's keys and
    its organizations' keys for a product key, an organization's own keys for an organization key."""
    qs = ApiKey.objects.all()
    if tenant.is_platform:
        return qs.filter(Q(scope=KeyScope.PLATFORM) | Q(scope=KeyScope.PRODUCT))
    if tenant.organization_id:
        return qs.filter(organization_id=tenant.organization_id)
    return qs.filter(product_id=tenant.product_id)


def api_key_get(*, tenant: Tenant, prefix: str) -> ApiKey:
    key = api_key_list(tenant=tenant).filter(prefix=prefix).first()
    if key is None:
        raise NotFound("API key not found.")
    return key
