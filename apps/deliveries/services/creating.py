"""Creating deliveries: the one place a run's delivery row is built, and enqueueing them."""

from __future__ import annotations

import logging
from collections import defaultdict

from django.conf import settings
from django.utils import timezone

from apps.audit.services import AuditEntry, audit_record_many
from apps.core.hints import hint_on_commit

from ..channels import Rendered, channel_get
from ..models import Delivery, DeliveryStatus
from .history import status_events_record

logger = logging.getLogger(__name__)



# --- Creating deliveries ------------------------------------------------------------------------


def deliveries_enqueue_on_commit(ids: list[int], priority: str) -> None:
    batch = settings.ROWBELL_DELIVERY_BATCH
    for start in range(0, len(ids), batch):
        hint_on_commit("apps.deliveries.tasks.deliveries_send", [ids[start:start + batch]], queue=priority)


def deliveries_enqueue_by_priority(pairs) -> None:
    """deliveries_enqueue_on_commit for (delivery id, priority) pairs: each priority's ids on its queue."""
    by_priority: dict[str, list[int]] = defaultdict(list)
    for delivery_id, priority in pairs:
        by_priority[priority].append(delivery_id)
    for priority, ids in by_priority.items():
        deliveries_enqueue_on_commit(ids, priority)


def delivery_build(*, run, step_id: str, channel: str, rendered: Rendered, held: bool = False,
                   max_attempts: int | None = None, backoff: tuple = (None, None)) -> tuple[Delivery, AuditEntry | None]:
    """The delivery a run's notify step makes, unsaved: queued, held for review (sandbox) or skipped with
    the reason; and the audit row a held or skipped one needs."""
    now = timezone.now()
    skipped = bool(rendered.skip_reason)
    status = DeliveryStatus.SKIPPED if skipped else DeliveryStatus.HELD if held else DeliveryStatus.QUEUED
    queued = status == DeliveryStatus.QUEUED
    delivery = Delivery(
        product_id=run.product_id, organization_id=run.organization_id, request_id=run.request_id, run=run,
        step_id=step_id, channel=channel, endpoint=rendered.endpoint, endpoint_id=rendered.endpoint_id,
        recipient_id=str(run.recipient.get("id", ""))[:200], target=rendered.target, payload=rendered.payload,
        priority=run.priority, max_attempts=max_attempts or settings.ROWBELL_DELIVERY_MAX_ATTEMPTS,
        backoff_seconds=backoff[0], max_backoff_seconds=backoff[1], status=status,
        last_error=rendered.skip_reason, next_attempt_at=now if queued else None,
        enqueued_at=now if queued else None, completed_at=now if skipped else None,
    )
    if not skipped:
        channel_get(channel).prepare(delivery, definition=run.workflow_version.definition)
    audit = None
    if not queued:
        audit = AuditEntry(action="delivery.skipped" if skipped else "delivery.held", target_type="delivery",
                           target_id=delivery.message_id, product_id=run.product_id,
                           organization_id=run.organization_id,
                           data={"reason": rendered.skip_reason, "channel": channel} if skipped
                           else {"channel": channel, "reason": "sandbox"})
    return delivery, audit


def delivery_create(*, run, step_id: str, channel: str, rendered: Rendered, held: bool = False,
                    max_attempts: int | None = None, backoff: tuple = (None, None)) -> Delivery:
    """Record a run's delivery (see delivery_build); send it after commit unless it is held or skipped.

    Call inside the step's transaction: the delivery exists if and only if the step completed.
    """
    delivery, audit = delivery_build(run=run, step_id=step_id, channel=channel, rendered=rendered, held=held,
                                     max_attempts=max_attempts, backoff=backoff)
    delivery.save()
    status_events_record([(delivery.id, delivery.status)], at=delivery.created_at)
    if audit is not None:
        audit_record_many([audit])
    else:
        deliveries_enqueue_on_commit([delivery.id], run.priority)
    return delivery
