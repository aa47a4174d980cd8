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


def delivery_list(*, tenant: Tenant, status: str | None = None, workflow: str | None = None,
                  run_id: int | None = None) -> QuerySet:
    """The tenant's deliveries, newest first, optionally of one status, workflow or run."""
    from .models import Delivery

    qs = tenant.scoped(Delivery.objects.all())
    if status:
        qs = qs.filter(status=status)
    if workflow:
        qs = qs.filter(run__workflow_version__workflow__key=workflow)
    if run_id is not None:
        qs = qs.filter(run_id=run_id)
    return qs.order_by("-id")


def delivery_get(*, tenant: Tenant, message_id: str):
    """One of the tenant's deliveries by its id (msg_...), with its status history and attempts."""
    from django.db.models import Prefetch

    from .models import Delivery, DeliveryAttempt, DeliveryEvent

    delivery = (tenant.scoped(Delivery.objects.all()).filter(message_id=message_id)
                .prefetch_related(Prefetch("events", queryset=DeliveryEvent.objects.order_by("id")),
                                  Prefetch("attempts", queryset=DeliveryAttempt.objects.order_by("number")))
                .first())
    if delivery is None:
        raise NotFound("Delivery not found.")
    return delivery
