"""Status history: one row per status a delivery passes through."""

from __future__ import annotations

import logging

from django.utils import timezone

from apps.core.bulk import insert_rows

from ..models import DeliveryEvent

logger = logging.getLogger(__name__)


# --- Status history -----------------------------------------------------------------------------


def status_events_record(changes, *, at=None, source: str = "rowbell") -> None:
    """Append one DeliveryEvent per (delivery id, new status[, detail]) in one statement. Call in the
    transaction that changes the statuses."""
    if not changes:
        return
    at = (at or timezone.now()).isoformat()
    insert_rows(
        DeliveryEvent,
        [
            {"delivery_id": c[0], "status": c[1], "at": at, "source": source, "detail": c[2] if len(c) > 2 else {}}
            for c in changes
        ],
    )
