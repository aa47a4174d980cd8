from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from apps.core.bulk import insert_rows

from .models import AuditEvent

SYSTEM = "system"


@dataclass(frozen=True)
class AuditEntry:
    action: str
    target_type: str
    target_id: Any
    product_id: Any = None
    organization_id: Any = None
    actor: str = SYSTEM
    data: dict = field(default_factory=dict)

    def to_model(self) -> AuditEvent:
        return AuditEvent(
            action=self.action,
            target_type=self.target_type,
            target_id=str(self.target_id),
            product_id=self.product_id,
            organization_id=self.organization_id,
            actor=self.actor,
            data=self.data,
        )


def audit_record(
    *,
    action: str,
    target_type: str,
    target_id: Any,
    product_id: Any = None,
    organization_id: Any = None,
    actor: str = SYSTEM,
    data: dict | None = None,
) -> AuditEvent:
    """Append one audit row. Call it inside the transaction of the change it records."""
    return AuditEvent.objects.create(
        action=action,
        target_type=target_type,
        target_id=str(target_id),
        product_id=product_id,
        organization_id=organization_id,
        actor=actor,
        data=data or {},
    )


def audit_record_many(entries: list[AuditEntry]) -> None:
    """Append many audit rows in one statement (delivery batches)."""
    from django.utils import timezone

    now = timezone.now().isoformat()
    insert_rows(
        AuditEvent,
        [
            {
                "created_at": now,
                "product_id": e.product_id,
                "organization_id": e.organization_id,
                "actor": e.actor,
                "action": e.action,
                "target_type": e.target_type,
                "target_id": str(e.target_id),
                "data": e.data,
            }
            for e in entries
        ],
    )
