"""Creating deliveries: the one place a delivery row is built (delivery_build), writing them, enqueueing them."""

from __future__ import annotations

import logging
from collections import defaultdict
from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from apps.audit.services import AuditEntry
from apps.core.bulk import insert_rows
from apps.core.hints import hint_on_commit
from apps.core.instances import instance_build

from ..backoff import retry_schedule
from ..channels import Rendered, channel_get
from ..models import Delivery, DeliveryStatus, new_message_id
from .history import status_events_record

logger = logging.getLogger(__name__)


# --- Creating deliveries ------------------------------------------------------------------------


def deliveries_enqueue_on_commit(ids: list[int], priority: str) -> None:
    batch = settings.ROWBELL_DELIVERY_BATCH
    for start in range(0, len(ids), batch):
        hint_on_commit("apps.deliveries.tasks.deliveries_send", [ids[start : start + batch]], queue=priority)


def deliveries_enqueue_by_priority(pairs) -> None:
    """deliveries_enqueue_on_commit for (delivery id, priority) pairs: each priority's ids on its queue."""
    by_priority: dict[str, list[int]] = defaultdict(list)
    for delivery_id, priority in pairs:
        by_priority[priority].append(delivery_id)
    for priority, ids in by_priority.items():
        deliveries_enqueue_on_commit(ids, priority)


def delivery_build(
    *,
    channel: str,
    rendered: Rendered,
    run=None,
    product_id=None,
    organization_id=None,
    event_id: int | None = None,
    chunk: int = 0,
    step_id: str = "",
    priority: str | None = None,
    held: bool = False,
    retry: dict | None = None,
    memo: dict | None = None,
) -> tuple[Delivery, AuditEntry | None]:
    """The one place a delivery row is built (unsaved), whoever makes it: a run's notify step, an escalation
    notice, a row-event message. Returns the delivery and the audit row a held or skipped one needs (None for
    a queued one); apps.deliveries.services.deliveries_write writes them.

    - `rendered`: what the channel rendered (target, payload, endpoint), or why nothing is sent
      (`skip_reason`: the delivery is recorded skipped, with the reason).
    - `run`: the run it belongs to; its product, organization, request, recipient and priority are the
      delivery's. Without a run, `product_id` (and `organization_id`) say whose it is.
    - `event_id`, `chunk`: a row-event message (which event, which chunk of its ids).
    - `priority`: the queue it is sent from (default: the run's, else "normal"); `held`: held for review
      (sandbox) instead of queued; `retry`: the workflow's retry policy ({"schedule"} or {"max_attempts",
      "backoff", "max_backoff"}, each optional), else the endpoint's schedule or the channel's default
      (apps.deliveries.backoff.retry_schedule).
    - `memo`: a dict shared by the deliveries built together (a batch of runs), for what is the same for all
      (the provider configured for a product, or organization, and channel).
    """
    now = timezone.now()
    retry = retry or {}
    schedule = retry_schedule(
        channel, policy=retry, endpoint_schedule=getattr(rendered.endpoint, "retry_schedule", None)
    )
    max_attempts = len(schedule) + 1 if schedule is not None else retry.get("max_attempts")
    skipped = bool(rendered.skip_reason)
    status = DeliveryStatus.SKIPPED if skipped else DeliveryStatus.HELD if held else DeliveryStatus.QUEUED
    queued = status == DeliveryStatus.QUEUED
    if run is not None:
        product_id, organization_id = run.product_id, run.organization_id
    related = {"run": run}
    if rendered.endpoint is not None or rendered.endpoint_id is None:
        related["endpoint"] = rendered.endpoint
    # Every column, as Delivery() would fill them (apps/core/instances.py: built by the thousand).
    delivery = instance_build(
        Delivery,
        {
            "id": None,
            "message_id": new_message_id(),
            "product_id": product_id,
            "organization_id": organization_id,
            "request_id": run.request_id if run else None,
            "run_id": run.id if run else None,
            "step_id": step_id,
            "event_id": event_id,
            "chunk": chunk,
            "channel": channel,
            "endpoint_id": rendered.endpoint_id,
            "recipient_id": str(run.recipient.get("id", ""))[:200] if run else "",
            "target": rendered.target,
            "provider_message_id": "",
            "payload": rendered.payload,
            "priority": priority or (run.priority if run else "normal"),
            "status": status,
            "attempt_count": 0,
            "max_attempts": max_attempts or settings.ROWBELL_DELIVERY_MAX_ATTEMPTS,
            "retry_schedule": schedule,
            "backoff_seconds": retry.get("backoff") if schedule is None else None,
            "max_backoff_seconds": retry.get("max_backoff") if schedule is None else None,
            "next_attempt_at": now if queued else None,
            "enqueued_at": now if queued else None,
            "lease_until": None,
            "last_error": rendered.skip_reason,
            "created_at": now,
            "updated_at": now,
            "completed_at": now if skipped else None,
        },
        related=related,
    )
    if run is not None and not skipped:
        channel_get(channel).prepare(delivery, definition=run.workflow_version.definition, memo=memo)
    audit = None
    if not queued:
        audit = AuditEntry(
            action="delivery.skipped" if skipped else "delivery.held",
            target_type="delivery",
            target_id=delivery.message_id,
            product_id=product_id,
            organization_id=organization_id,
            data={"reason": rendered.skip_reason, "channel": channel}
            if skipped
            else {"channel": channel, "reason": "sandbox"},
        )
    return delivery, audit


# Every column of a delivery but its id, in the model's order: what deliveries_write inserts.
_COLUMNS = tuple(f.attname for f in Delivery._meta.concrete_fields if not f.primary_key)


def deliveries_write(
    deliveries: list[Delivery], *, claim: bool = False, ignore_conflicts: bool = False, now=None
) -> list[Delivery]:
    """Insert deliveries built by delivery_build, in one statement, with the first event of each one's status
    history; return those written, in order, with their ids set.

    - `claim` False: the queued ones are hinted to the sending workers once the transaction commits.
    - `claim` True: the queued ones are written claimed (status `sending`, first attempt counted, leased for
      ROWBELL_LEASE_SECONDS) for the caller to send once the transaction commits
      (deliveries_send_claimed). If it dies first, the lease runs out and deliveries_reconcile queues them
      again.
    - `ignore_conflicts`: a delivery that a unique key says exists already (an event read twice, a step
      executed twice) is not written, and not returned.

    Call inside the transaction that makes them. The audit rows delivery_build returned are the caller's
    to write (with its own, in one statement).
    """
    if not deliveries:
        return []
    now = now or timezone.now()
    lease = now + timedelta(seconds=settings.ROWBELL_LEASE_SECONDS)
    for d in deliveries:
        d.created_at = d.updated_at = now
        if claim and d.status == DeliveryStatus.QUEUED:
            d.status, d.attempt_count, d.lease_until = DeliveryStatus.SENDING, 1, lease
    ids = dict(
        (m, pk)
        for pk, m in insert_rows(
            Delivery,
            [{f: d.__dict__[f] for f in _COLUMNS} for d in deliveries],
            returning=("id", "message_id"),
            on_conflict="ON CONFLICT DO NOTHING" if ignore_conflicts else "",
        )
    )
    written = []
    for d in deliveries:
        if d.message_id in ids:
            d.id = ids[d.message_id]
            d._state.adding = False
            written.append(d)
    status_events_record(
        [(d.id, d.status) + (({"reason": d.last_error},) if d.last_error else ()) for d in written], at=now
    )
    if not claim:
        deliveries_enqueue_by_priority([(d.id, d.priority) for d in written if d.status == DeliveryStatus.QUEUED])
    return written
