from __future__ import annotations

from django.db.models import QuerySet

from apps.core import exactjson
from apps.core.exceptions import NotFound
from apps.deliveries.models import FAILURE_STATUSES, FINAL_STATUSES, SUCCESS_STATUSES, Delivery
from apps.tenants.principals import Tenant

from .models import RequestStatus, Run, RunStatus, RunStep, TriggerRequest

# What the request and run views show of each delivery.
DELIVERY_SUMMARY = (
    "message_id",
    "run_id",
    "step_id",
    "channel",
    "recipient_id",
    "status",
    "attempt_count",
    "last_error",
    "created_at",
    "completed_at",
)


def request_get(*, tenant: Tenant, request_id) -> TriggerRequest:
    request = (
        tenant.scoped(TriggerRequest.objects.all())
        .select_related("workflow_version__workflow")
        .filter(id=request_id)
        .first()
    )
    if request is None:
        raise NotFound("Request not found.")
    return request


def _overall(request: TriggerRequest, runs: list[dict], deliveries: list[dict]) -> str:
    """accepted -> processing -> completed | failed | partially_failed."""
    if request.status == RequestStatus.ACCEPTED:
        return "accepted"
    if any(r["status"] in (RunStatus.QUEUED, RunStatus.RUNNING, RunStatus.WAITING) for r in runs):
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
    runs = list(
        Run.objects.filter(request=request)
        .order_by("recipient_index")
        .values("id", "recipient_index", "recipient", "status", "error", "completed_at")
    )
    deliveries = list(Delivery.objects.filter(request=request).order_by("id").values(*DELIVERY_SUMMARY))
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


def run_list(
    *, tenant: Tenant, workflow: str | None = None, status: str | None = None, event: int | None = None, request_id=None
) -> QuerySet:
    """The tenant's runs, newest first, optionally of one workflow, status, database event or request."""
    qs = tenant.scoped(Run.objects.select_related("workflow_version__workflow", "event"))
    if workflow:
        qs = qs.filter(workflow_version__workflow__key=workflow)
    if status:
        qs = qs.filter(status=status)
    if event is not None:
        qs = qs.filter(event_id=event)
    if request_id is not None:
        qs = qs.filter(request_id=request_id)
    return qs.order_by("-id")


def run_get(*, tenant: Tenant, run_id: int) -> Run:
    run = run_list(tenant=tenant).filter(id=run_id).first()
    if run is None:
        raise NotFound("Run not found.")
    return run


def run_detail(*, tenant: Tenant, run_id: int) -> dict:
    """A run with what started it, the steps it executed and its deliveries."""
    run = run_get(tenant=tenant, run_id=run_id)
    steps = list(
        RunStep.objects.filter(run=run)
        .order_by("index", "id")
        .values("step_id", "index", "type", "status", "output", "error", "finished_at")
    )
    deliveries = list(Delivery.objects.filter(run=run).order_by("id").values(*DELIVERY_SUMMARY))
    return {"run": run, "steps": steps, "deliveries": deliveries}


def event_summary(event, *, ids: list | None = None) -> dict:
    """What a run's steps and the API show of the database event that launched it: {"id": "evt_N", "type",
    "table", "ids", "occurred_at"}. `ids`, when given, are the keys the run is about (a per-row run's own
    row), else the event's."""
    from apps.connections.sources import EVENT_OF_OPERATION

    return {
        "id": f"evt_{event.id}",
        "type": EVENT_OF_OPERATION[event.op],
        "table": event.table_name,
        "ids": event.ids if ids is None else ids,
        "occurred_at": event.captured_at.isoformat(),
    }


def rerun_version_note(run: Run) -> str:
    """Which version a re-run executes, as the run page says it: "v1 (the run's version)" or "v2 (published
    since; run 12 ran v1)"; "" for a run that is not a re-run. Reads `run.rerun_of`'s version."""
    if not run.rerun_of_id:
        return ""
    original, mine = run.rerun_of.workflow_version, run.workflow_version
    if mine.id == original.id:
        return f"v{mine.version} (the run's version)"
    return f"v{mine.version} (published since; run {run.rerun_of_id} ran v{original.version})"


# On one instant, what caused something comes before it: an attempt, then its delivery's new status, then the
# step that status failed, then the run's end.
_RANK = {"attempt": 0, "delivery": 1, "step": 2, "end": 4}


def run_timeline(*, run: Run) -> list[dict]:
    """Everything that happened to a run, oldest first, for the operators' run page: what started it, its
    steps (waits with when they end), its deliveries with every status change and attempt (status code,
    duration, error), operators' actions and how it ended. Entries are {"at", "kind", "title", "detail",
    "css"}. A fixed number of queries whatever the run.

    Oldest first, with two corrections of the recorded times: a step that its delivery failed later (the
    step's row was written when it ran, and marked failed when its delivery gave up) is shown when it failed,
    after the attempts and status changes of its deliveries; and the run's end is never shown before its
    steps (a failing step's row is written a moment after the run's end time is taken)."""
    from django.db.models import Prefetch

    from apps.audit.models import AuditEvent
    from apps.deliveries.models import DeliveryAttempt, DeliveryEvent

    entries: list[dict] = []

    def add(at, kind: str, title: str, detail: str = "", css: str = ""):
        if at is not None:
            entries.append({"at": at, "kind": kind, "title": title, "detail": detail, "css": css})
            return entries[-1]
        return None

    if run.request_id:
        request = run.request
        add(
            request.created_at,
            "trigger",
            f"Trigger request {request.id} accepted ({request.priority} priority)",
            f"by {request.actor}",
        )
    if run.event_id:
        event = run.event
        add(
            event.captured_at,
            "event",
            f"Row event: {event.op} on {event.table_name}",
            f"ids {exactjson.dumps(event.ids)}",
        )
        add(event.recorded_at, "event", "Event read from the customer database")
    rerun = f" as a re-run of run {run.rerun_of_id}, on {rerun_version_note(run)}" if run.rerun_of_id else ""
    add(run.created_at, "run", f"Run created{rerun}")
    failed_steps: dict[str, dict] = {}
    for step in RunStep.objects.filter(run=run).order_by("index", "id"):
        failed = step.status == "failed"
        detail = step.error if failed else ", ".join(f"{k}: {v}" for k, v in (step.output or {}).items())
        entry = add(
            step.finished_at,
            "step",
            f"Step {step.step_id} ({step.type}) {step.status}",
            detail,
            "failure" if failed else "wait" if step.type == "wait" else "",
        )
        if failed and entry is not None:
            failed_steps[step.step_id] = entry
    deliveries = (
        Delivery.objects.filter(run=run)
        .order_by("id")
        .prefetch_related(
            Prefetch("events", queryset=DeliveryEvent.objects.order_by("id")),
            Prefetch("attempts", queryset=DeliveryAttempt.objects.order_by("number")),
        )
    )
    for delivery in deliveries:
        step_entry = failed_steps.get(delivery.step_id)
        for event in delivery.events.all():
            add(
                event.at,
                "delivery",
                f"{delivery.channel} {delivery.message_id}: {event.status}",
                f"{event.source}" + (f" {event.detail}" if event.detail else ""),
                "failure" if event.status in FAILURE_STATUSES else "",
            )
            if step_entry is not None:
                step_entry["at"] = max(step_entry["at"], event.at)
        for attempt in delivery.attempts.all():
            code = f"HTTP {attempt.status_code}" if attempt.status_code else "no answer"
            add(
                attempt.started_at,
                "attempt",
                f"Attempt {attempt.number} of {delivery.message_id}: {attempt.outcome}, {code}, "
                f"{attempt.duration_ms} ms",
                attempt.error,
                "failure" if attempt.outcome == "failure" else "",
            )
            if step_entry is not None:
                step_entry["at"] = max(step_entry["at"], attempt.started_at)
    for audit in AuditEvent.objects.filter(target_type="run", target_id=str(run.id)).order_by("id"):
        add(
            audit.created_at,
            "audit",
            f"{audit.action} by {audit.actor}",
            ", ".join(f"{k}: {v}" for k, v in (audit.data or {}).items() if k != "reason"),
        )
    if run.status == "waiting" and run.resume_at:
        add(
            run.resume_at,
            "wait",
            f"Waiting on {run.waiting_on or 'time'} until {run.resume_at:%Y-%m-%d %H:%M:%S}",
            css="wait",
        )
    if run.completed_at:
        ended = max([run.completed_at, *(e["at"] for e in entries if e["kind"] == "step")])
        add(ended, "end", f"Run {run.status}", run.error, "failure" if run.status == "failed" else "")
    # Stable: entries of one kind at one instant keep the order they were read in.
    entries.sort(key=lambda e: (e["at"], _RANK.get(e["kind"], 3)))
    return entries
