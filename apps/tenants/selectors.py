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
