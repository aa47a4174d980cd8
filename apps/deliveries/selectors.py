from django.db.models import QuerySet

from apps.core.exceptions import NotFound
from apps.tenants.principals import Tenant

from .models import WebhookEndpoint


def webhook_endpoint_list(*, tenant: Tenant) -> QuerySet:
    return WebhookEndpoint.objects.filter(product_id=tenant.product_id)


def webhook_endpoint_get(*, tenant: Tenant, endpoint_id) -> WebhookEndpoint:
    endpoint = webhook_endpoint_list(tenant=tenant).filter(id=endpoint_id).first()
    if endpoint is None:
        raise NotFound("Webhook endpoint not found.")
    return endpoint
