"""Row-event webhook subscriptions: an endpoint told about changes to a table in a connected database.

A subscription is a webhook endpoint (apps.deliveries) with a source (apps.connections.sources): which
table, which events or which classification. Saving one checks the table as it is and installs its capture
in the customer database in the same transaction; disabling it retires the capture once nothing else uses
it; pick-up hands every recorded event here, and each becomes thin, signed messages to the endpoints
subscribed to its capture.
"""

from __future__ import annotations

from django.conf import settings
from django.db import transaction

from apps.connections.capture import Capture
from apps.connections.consumers import CaptureUse
from apps.connections.models import Connection
from apps.connections.services import connection_captures_install, connection_captures_prune
from apps.connections.sources import EVENT_OF_OPERATION, NOT_DELIVERED, row_source_validate
from apps.core.actions import action_queue
from apps.core.exceptions import InvalidInput
from apps.core.ids import uuid_or_none
from apps.deliveries.channels import Rendered
from apps.deliveries.models import WebhookEndpoint
from apps.deliveries.services import (
    deliveries_write,
    delivery_build,
    webhook_endpoint_create,
    webhook_endpoint_url_check,
)


def subscription_create(
    *,
    product,
    url: str,
    description: str = "",
    accept_any_2xx: bool = False,
    retry_schedule: list | None = None,
    source: dict | None = None,
    actor: str,
) -> WebhookEndpoint:
    """Register a webhook endpoint; with a row-event `source`, subscribe it to changes of a table.

    The source (`{"connection": id, "table": ..., "events": [...]}` or a classification, see
    apps.connections.sources) is checked against the table as it is in the customer database, and its
    capture is installed there inside the same transaction that saves the endpoint: if the install fails,
    nothing is saved. Without a source this is a plain endpoint. Returns the endpoint with its `whsec_`
    secret (shown once). Raises InvalidInput (field `url` or `source.<field>`) or the install's error.
    """
    webhook_endpoint_url_check(url)
    if source is None:
        return webhook_endpoint_create(
            product=product,
            url=url,
            description=description,
            accept_any_2xx=accept_any_2xx,
            retry_schedule=retry_schedule,
            actor=actor,
        )
    connection_id = source.get("connection") if isinstance(source, dict) else None
    connection = Connection.objects.filter(product=product, id=uuid_or_none(connection_id)).first()
    if connection is None:
        raise InvalidInput("No connection with this id in this product.", field="source.connection")
    normalized, capture = row_source_validate(connection=connection, source=source)
    with transaction.atomic():
        # Serialize with prunes of this connection (see connection_captures_prune).
        Connection.objects.select_for_update().filter(id=connection.id).first()
        endpoint = webhook_endpoint_create(
            product=product,
            url=url,
            description=description,
            accept_any_2xx=accept_any_2xx,
            retry_schedule=retry_schedule,
            actor=actor,
            connection=connection,
            source=normalized,
            capture_name=capture.name,
            capture_spec=capture.to_spec(),
        )
        connection_captures_install(connection=connection, captures=[capture], actor=actor)
    return endpoint


def subscription_capture_uses(*, connection) -> list[CaptureUse]:
    """The captures the connection's enabled subscriptions use, oldest first (a capture-users function, see
    apps/connections/consumers.py)."""
    return [
        CaptureUse(kind="endpoints", label=str(endpoint_id), capture=capture, spec=spec)
        for endpoint_id, capture, spec in WebhookEndpoint.objects.filter(connection=connection, enabled=True)
        .exclude(capture="")
        .order_by("created_at", "id")
        .values_list("id", "capture", "capture_spec")
    ]


def subscription_capture_restore(*, endpoint: WebhookEndpoint, actor: str) -> None:
    """Reinstall the capture of a subscription enabled again, in the transaction that enables it (so a
    refusal leaves it disabled)."""
    if endpoint.capture_spec:
        connection = Connection.objects.select_for_update().get(id=endpoint.connection_id)
        connection_captures_install(
            connection=connection, captures=[Capture.from_spec(endpoint.capture_spec)], actor=actor
        )


def subscription_captures_retire(*, endpoints: list[tuple], actor: str) -> None:
    """Queue retiring the captures of disabled subscriptions ((endpoint id, connection id) pairs); done by a
    worker, never in the request (apps/core/actions.py)."""
    for endpoint_id, connection_id in endpoints:
        if connection_id:
            action_queue(
                name="webhook.captures_prune",
                target_type="webhook",
                target_id=endpoint_id,
                args={"endpoint_id": str(endpoint_id)},
                actor=actor,
            )


def subscription_captures_prune(*, endpoint_id, actor: str) -> dict:
    """Retire the row-event trigger a disabled endpoint no longer needs (when nothing else uses it). A
    database that cannot be reached fails the queued action, which shows why; the endpoint stays disabled
    and `triggers prune` retires the trigger later."""
    endpoint = WebhookEndpoint.objects.select_related("connection").filter(id=endpoint_id).first()
    if endpoint is None or endpoint.enabled or not endpoint.connection_id:
        return {"retired": []}
    return {"retired": connection_captures_prune(connection=endpoint.connection, actor=actor)}


def _row_event_payload(endpoint, event, ids, index: int, count: int) -> dict:
    """The thin row-event message: who, what, which table, which rows. Receivers fetch the data."""
    payload = {
        "webhook_id": str(endpoint.id),
        "type": EVENT_OF_OPERATION[event.op],
        "table": event.table_name,
        "ids": ids,
        "event_id": f"evt_{event.id}",
        "occurred_at": event.captured_at.isoformat(),
        "chunk": {"index": index, "count": count},
    }
    if endpoint.source and "classification" in endpoint.source:
        payload["classification"] = endpoint.source["classification"]["name"]
    if event.detail and event.detail.get("partition"):  # a TRUNCATE of one partition
        payload["partition"] = event.detail["partition"]
    return payload


def row_event_deliveries_create(*, events) -> int:
    """Create the row-event webhook deliveries of newly recorded events; return how many (an event consumer,
    see apps/connections/consumers.py).

    Call inside the transaction that records the events. One message per endpoint, event and chunk of
    ROWBELL_WEBHOOK_IDS_PER_MESSAGE ids, built by delivery_build; the unique (endpoint, event, chunk) makes a
    repeat do nothing. They are hinted to the sending workers once the transaction commits.
    """
    events = [e for e in events if e.op not in NOT_DELIVERED]
    if not events:
        return 0
    endpoints = list(
        WebhookEndpoint.objects.filter(
            connection_id__in={e.connection_id for e in events}, capture__in={e.capture for e in events}, enabled=True
        )
    )
    if not endpoints:
        return 0
    size = settings.ROWBELL_WEBHOOK_IDS_PER_MESSAGE
    deliveries = []
    for event in events:
        for endpoint in endpoints:
            if endpoint.capture != event.capture or endpoint.connection_id != event.connection_id:
                continue
            chunks = [event.ids[i : i + size] for i in range(0, len(event.ids), size)] or [[]]
            for index, ids in enumerate(chunks):
                rendered = Rendered(
                    target=endpoint.url_masked,
                    endpoint_id=endpoint.id,
                    endpoint=endpoint,
                    payload=_row_event_payload(endpoint, event, ids, index, len(chunks)),
                )
                delivery, _ = delivery_build(
                    channel="webhook", rendered=rendered, product_id=endpoint.product_id, event_id=event.id, chunk=index
                )
                deliveries.append(delivery)
    return len(deliveries_write(deliveries, ignore_conflicts=True))
