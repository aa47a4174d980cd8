"""Sandbox review: release or discard held deliveries."""

from __future__ import annotations

import logging

from django.db import transaction
from django.utils import timezone

from apps.audit.services import AuditEntry, audit_record_many
from apps.core.exceptions import InvalidInput

from ..hooks import runs_settle
from ..models import Delivery, DeliveryStatus
from .creating import deliveries_enqueue_by_priority
from .history import status_events_record

logger = logging.getLogger(__name__)


# --- Sandbox review -----------------------------------------------------------------------------

MAX_REVIEW_BATCH = 1000


def at_most_a_batch(message_ids: list[str]) -> None:
    if len(message_ids) > MAX_REVIEW_BATCH:
        raise InvalidInput(f"At most {MAX_REVIEW_BATCH} deliveries at a time.", field="ids")


def _held(product_id, message_ids: list[str]) -> list[Delivery]:
    """The held deliveries among `message_ids`, locked: the product's, or any product's for operators
    (`product_id` None)."""
    at_most_a_batch(message_ids)
    held = Delivery.objects.select_for_update(of=("self",)).filter(
        message_id__in=message_ids, status=DeliveryStatus.HELD
    )
    if product_id is not None:
        held = held.filter(product_id=product_id)
    return list(held.order_by("id"))


def deliveries_release(*, product_id, message_ids: list[str], actor: str) -> list[str]:
    """Send held deliveries as they were rendered, through the normal path (signing, retries); return the
    ids released. Ids that are not held (already reviewed, or not this product's) are left alone. Operators
    pass `product_id=None`: held deliveries of any product."""
    now = timezone.now()
    with transaction.atomic():
        held = _held(product_id, message_ids)
        Delivery.objects.filter(id__in=[d.id for d in held]).update(
            status=DeliveryStatus.QUEUED, next_attempt_at=now, enqueued_at=now, updated_at=now
        )
        status_events_record(
            [(d.id, DeliveryStatus.QUEUED, {"released_by": actor}) for d in held], at=now, source="operator"
        )
        audit_record_many(
            [
                AuditEntry(
                    action="delivery.released",
                    target_type="delivery",
                    target_id=d.message_id,
                    product_id=d.product_id,
                    organization_id=d.organization_id,
                    actor=actor,
                    data={"channel": d.channel},
                )
                for d in held
            ]
        )
        deliveries_enqueue_by_priority((d.id, d.priority) for d in held)
    return [d.message_id for d in held]


def deliveries_discard(*, product_id, message_ids: list[str], actor: str) -> list[str]:
    """Drop held deliveries without sending them; their runs go on with the next step. Return the ids
    discarded."""
    now = timezone.now()
    with transaction.atomic():
        held = _held(product_id, message_ids)
        Delivery.objects.filter(id__in=[d.id for d in held]).update(
            status=DeliveryStatus.DISCARDED,
            completed_at=now,
            updated_at=now,
            last_error=f"Discarded in review by {actor}.",
        )
        status_events_record(
            [(d.id, DeliveryStatus.DISCARDED, {"discarded_by": actor}) for d in held], at=now, source="operator"
        )
        audit_record_many(
            [
                AuditEntry(
                    action="delivery.discarded",
                    target_type="delivery",
                    target_id=d.message_id,
                    product_id=d.product_id,
                    organization_id=d.organization_id,
                    actor=actor,
                    data={"channel": d.channel},
                )
                for d in held
            ]
        )
        runs_settle([(d.run_id, d.step_id, True, "") for d in held if d.run_id])
    return [d.message_id for d in held]
