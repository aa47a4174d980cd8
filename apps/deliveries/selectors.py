from django.db.models import QuerySet

from apps.core.exceptions import NotFound
from apps.tenants.principals import Tenant

from .models import ACCEPTED_STATUSES, WebhookEndpoint


def webhook_endpoint_list(*, tenant: Tenant) -> QuerySet:
    return WebhookEndpoint.objects.filter(product_id=tenant.product_id)


def webhook_endpoint_get(*, tenant: Tenant, endpoint_id) -> WebhookEndpoint:
    endpoint = webhook_endpoint_list(tenant=tenant).filter(id=endpoint_id).first()
    if endpoint is None:
        raise NotFound("Webhook endpoint not found.")
    return endpoint


def delivery_list(
    *, tenant: Tenant, status: str | None = None, workflow: str | None = None, run_id: int | None = None
) -> QuerySet:
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

    delivery = (
        tenant.scoped(Delivery.objects.all())
        .filter(message_id=message_id)
        .prefetch_related(
            Prefetch("events", queryset=DeliveryEvent.objects.order_by("id")),
            Prefetch("attempts", queryset=DeliveryAttempt.objects.order_by("number")),
        )
        .first()
    )
    if delivery is None:
        raise NotFound("Delivery not found.")
    return delivery


_METRICS = """
SELECT w.key AS workflow, d.channel,
       count(*) AS total,
       count(*) FILTER (WHERE d.status = ANY(%(accepted)s)) AS sent,
       count(*) FILTER (WHERE d.status IN ('delivered', 'opened', 'clicked')) AS delivered,
       count(*) FILTER (WHERE d.status = 'failed') AS failed,
       count(*) FILTER (WHERE d.status IN ('bounced', 'complained')) AS bounced,
       count(*) FILTER (WHERE d.status = 'skipped') AS skipped,
       count(*) FILTER (WHERE d.status IN ('opened', 'clicked')) AS opened,
       count(*) FILTER (WHERE d.status = 'clicked') AS clicked,
       percentile_cont(ARRAY[0.5, 0.9, 0.99]) WITHIN GROUP (
           ORDER BY extract(epoch FROM d.completed_at - d.created_at) * 1000)
           FILTER (WHERE d.completed_at IS NOT NULL
                   AND d.status = ANY(%(accepted)s)) AS latency
FROM deliveries_delivery d
LEFT JOIN runs_run r ON r.id = d.run_id
LEFT JOIN workflows_workflowversion v ON v.id = r.workflow_version_id
LEFT JOIN workflows_workflow w ON w.id = v.workflow_id
WHERE d.product_id = %(product)s AND d.created_at >= %(since)s AND d.created_at < %(until)s
  AND (%(organization)s::uuid IS NULL OR d.organization_id = %(organization)s::uuid)
  AND (%(workflow)s::text IS NULL OR w.key = %(workflow)s::text)
  AND (%(channel)s::text IS NULL OR d.channel = %(channel)s::text)
GROUP BY w.key, d.channel
ORDER BY w.key NULLS LAST, d.channel
"""


def delivery_metrics(
    *, tenant: Tenant, since, until, workflow: str | None = None, channel: str | None = None
) -> list[dict]:
    """Per workflow and channel, the deliveries created in [since, until): how many were sent, delivered,
    failed, bounced, skipped, opened and clicked, the open and click rates (of those sent), and the
    delivery latency percentiles (creation to the provider's or receiver's acceptance, in ms).
    Row-event webhooks, which belong to no workflow, have `workflow` null."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            _METRICS,
            {
                "product": tenant.product_id,
                "organization": tenant.organization_id,
                "since": since,
                "until": until,
                "workflow": workflow,
                "channel": channel,
                "accepted": sorted(ACCEPTED_STATUSES),
            },
        )
        columns = [c.name for c in cursor.description]
        rows = [dict(zip(columns, row)) for row in cursor.fetchall()]
    for row in rows:
        latency = row.pop("latency") or [None, None, None]
        row["latency_ms"] = {
            name: round(value, 1) if value is not None else None for name, value in zip(("p50", "p90", "p99"), latency)
        }
        row["open_rate"] = round(row["opened"] / row["sent"], 4) if row["sent"] else None
        row["click_rate"] = round(row["clicked"] / row["sent"], 4) if row["sent"] else None
    return rows


def provider_configured(*, product_id, organization_id, channel: str) -> dict | None:
    """Who would carry a message of `channel` for the product (and organization): {"name": the provider's
    name, "of": "organization" or "product", and "from_email" when it sends as one}, the organization's
    configuration first, as sending chooses
    (apps.deliveries.channels.providers.provider_for); None when neither has one (email then goes through the
    settings' mail server; other channels fail the delivery). Credentials are not read."""
    from django.db.models import Q

    from .models import ProviderConfig

    owners = (
        Q(organization_id__isnull=True) | Q(organization_id=organization_id)
        if organization_id
        else Q(organization_id__isnull=True)
    )
    configs = {
        None if owner is None else str(owner): (provider, options)
        for owner, provider, options in ProviderConfig.objects.filter(
            owners, product_id=product_id, channel=channel
        ).values_list("organization_id", "provider", "options")
    }
    for owner, of in ((str(organization_id) if organization_id else "", "organization"), (None, "product")):
        if owner in configs:
            provider, options = configs[owner]
            found = {"name": provider, "of": of}
            if (options or {}).get("from_email"):
                found["from_email"] = options["from_email"]
            return found
    return None
