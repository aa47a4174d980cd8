from __future__ import annotations

from typing import TYPE_CHECKING

from django.db.models import QuerySet

if TYPE_CHECKING:  # the principal is tenants', which builds on audit
    from apps.tenants.principals import Tenant

from .models import AuditEvent


def audit_list(*, tenant: Tenant, action: str | None = None, target_id: str | None = None) -> QuerySet:
    """The caller's own audit rows: a product sees its organizations' rows, an organization its own."""
    qs = AuditEvent.objects.all()
    if tenant.organization_id:
        qs = qs.filter(organization_id=tenant.organization_id)
    elif tenant.product_id:
        qs = qs.filter(product_id=tenant.product_id)
    if action:
        qs = qs.filter(action=action) if not action.endswith(".") else qs.filter(action__startswith=action)
    if target_id:
        qs = qs.filter(target_id=target_id)
    return qs
