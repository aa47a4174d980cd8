from __future__ import annotations

from apps.core.exceptions import NotFound
from apps.deliveries.models import FINAL_STATUSES, SUCCESS_STATUSES, Delivery
from apps.tenants.principals import Tenant

from .models import RequestStatus, Run, RunStatus, TriggerRequest


def request_get(*, tenant: Tenant, request_id) -> TriggerRequest:
    qs = TriggerRequest.objects.filter(product_id=tenant.product_id)
    if tenant.organization_id:
        qs = qs.filter(organization_id=tenant.organization_id)
    request = qs.select_related("workflow_version__workflow").filter(id=request_id).first()
    if request is None:
        raise NotFound("Request not found.")
    return request


def _overall(request: TriggerRequest, runs: list[dict], deliveries: list[dict]) -> str:
    """accepted -> processing -> completed | failed | partially_failed."""
    if request.status == RequestStatus.ACCEPTED:
        return "accepted"
    if any(r["status"] in (RunStatus.QUEUED, RunStatus.RUNNING) for r in runs):
        return "processing"
    if any(d["status"] not in FINAL_STATUSES for d in deliveries):
        return "processing"
    failed = [r for r in runs if r["status"] == RunStatus.FAILED] + [
        d for d in deliveries if d["status"] not in SUCCESS_STATUSES
    ]
    if not failed:
        return "completed"
    succeeded = any(d["status"] in SUCCESS_STATUSES for d in deliveries)
    return "partially_failed" if succeeded else "failed"


def request_status(*, tenant: Tenant, request_id) -> dict:
    """A request with its runs and each delivery's channel, status and attempt count."""
    request = request_get(tenant=tenant, request_id=request_id)
    runs = list(Run.objects.filter(request=request).order_by("recipient_index")
                .values("id", "recipient_index", "recipient", "status", "error", "completed_at"))
    deliveries = list(Delivery.objects.filter(request=request).order_by("id").values(
        "message_id", "run_id", "step_id", "channel", "recipient_id", "status", "attempt_count", "last_error",
        "created_at", "completed_at"))
    return {
        "request_id": request.id,
        "status": _overall(request, runs, deliveries),
        "workflow": request.workflow_version.workflow.key,
        "version": request.workflow_version.version,
        "priority": request.priority,
        "created_at": request.created_at,
        "runs": runs,
        "deliveries": deliveries,
    }
