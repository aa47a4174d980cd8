"""Step executors, by step type. Each runs inside the transaction that records its outcome and moves the
run on: what it writes (a delivery, a batch item) exists if and only if the run moved past it.

An executor returns a StepOutcome (what the step produced, and whether the run waits), or raises
StepFailed (permanent: the run fails now) or StepRetry (transient: the step is tried again later, with
the workflow's back-off, until its attempts run out).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone as dt_timezone
from typing import Callable

from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from apps.deliveries.channels import channel_get
from apps.deliveries.models import DeliveryStatus
from apps.deliveries.services import delivery_create
from apps.workflows.conditions import data_condition_holds, path_get

from .models import Batch, BatchItem, BatchStatus, WaitingOn


class StepFailed(Exception):
    """A step that cannot succeed (e.g. a template error): the run fails without retrying."""


class StepRetry(Exception):
    """A step that failed for a reason that may pass (e.g. the customer database is unreachable)."""


@dataclass
class StepOutcome:
    output: dict = field(default_factory=dict)
    finished: bool = True  # False: not done yet (a condition that does not hold): the run comes back to it
    waiting_on: str = WaitingOn.NOTHING
    resume_at: datetime | None = None
    end_run: bool = False  # the run ends here, completed (a batch member: its owner carries on)


def notify_render(*, run, step: dict, context: dict, memo: dict | None = None):
    """Fill a notify step's templates for a run; a template that cannot render fails the step, and so
    does one that trips a bound of its render (time, size: the reason says which). The step's templates
    share one time budget (ROWBELL_TEMPLATE_RENDER_SECONDS)."""
    from apps.core.templating import TemplateRenderError, render_budget

    config = {k: v for k, v in step.items() if k not in ("id", "type", "channel")}
    try:
        with render_budget():
            return channel_get(step["channel"]).render(config=config, context={**context, "step": step["id"]},
                                                       product=run.product, memo=memo)
    except TemplateRenderError as exc:
        raise StepFailed(f"Step '{step['id']}': {exc}") from exc


def notify_delivery_options(run, engine) -> dict:
    """How a run's deliveries are made: held when sandboxed, retried by the workflow's policy."""
    policy = run.workflow_version.definition.get("retry", {})
    return {"held": engine.sandboxed(run), "max_attempts": policy.get("max_attempts"),
            "backoff": (policy.get("backoff"), policy.get("max_backoff"))}


def notify_execute(*, run, step: dict, context: dict, engine) -> StepOutcome:
    rendered = notify_render(run=run, step=step, context=context)
    delivery = delivery_create(run=run, step_id=step["id"], channel=step["channel"], rendered=rendered,
                               **notify_delivery_options(run, engine))
    output = {"delivery": delivery.message_id, "status": delivery.status}
    if delivery.status in (DeliveryStatus.QUEUED, DeliveryStatus.HELD):
        # The run goes on once the delivery is sent; if it fails for good, so does the run.
        return StepOutcome(output=output, waiting_on=WaitingOn.DELIVERY)
    return StepOutcome(output=output)


def _timestamp(value, what: str) -> datetime:
    parsed = parse_datetime(value) if isinstance(value, str) else None
    if parsed is None:
        raise StepFailed(f"{what} is not a timestamp (ISO 8601 expected), got {value!r}.")
    if timezone.is_naive(parsed):
        parsed = parsed.replace(tzinfo=dt_timezone.utc)
    return parsed


def wait_execute(*, run, step: dict, context: dict, engine) -> StepOutcome:
    now = timezone.now()
    if "duration" in step:
        until = now + timedelta(seconds=step["duration"])
        return StepOutcome(output={"until": until.isoformat()}, waiting_on=WaitingOn.TIME, resume_at=until)
    if "until" in step:
        until = _timestamp(path_get(context, step["until"]), f"Step '{step['id']}': {step['until']}") + timedelta(
            seconds=step.get("offset") or 0)
        if until <= now:  # already past: nothing to wait for
            return StepOutcome(output={"until": until.isoformat(), "waited": False})
        return StepOutcome(output={"until": until.isoformat()}, waiting_on=WaitingOn.TIME, resume_at=until)
    # Until a condition holds: checked now and every `every_seconds`, until the deadline.
    deadlines = run.state.setdefault("deadlines", {})
    rechecking = step["id"] in deadlines
    deadline = (datetime.fromisoformat(deadlines[step["id"]]) if rechecking
                else now + timedelta(seconds=step["timeout"]))
    deadlines[step["id"]] = deadline.isoformat()
    if rechecking:
        engine.rows_refresh(run, context)  # the condition is about the rows as they are now
    if data_condition_holds(step["condition"], context):
        return StepOutcome(output={"timed_out": False})
    if now >= deadline:
        return StepOutcome(output={"timed_out": True})
    return StepOutcome(finished=False, waiting_on=WaitingOn.CONDITION,
                       resume_at=min(deadline, now + timedelta(seconds=step["every"])))


def batch_execute(*, run, step: dict, context: dict, engine) -> StepOutcome:
    """First visit: join the open batch of this key, or open one and wait for its window to close.
    Second visit (the owner, after the window): close it and carry on with every item."""
    now = timezone.now()
    version = run.workflow_version
    owned = run.state.get("batch_owned", {}).get(step["id"])
    if owned:
        batch = Batch.objects.select_for_update().get(id=owned)
        if batch.status == BatchStatus.OPEN:
            Batch.objects.filter(id=batch.id).update(status=BatchStatus.CLOSED)
        items = list(BatchItem.objects.filter(batch=batch).order_by("id").values_list("item", flat=True))
        context["batch"] = {"key": batch.key, "items": items, "count": len(items)}
        run.state["batch"] = context["batch"]
        return StepOutcome(output={"batch": batch.id, "count": len(items)})
    key = path_get(context, step["key"])
    if key is None or isinstance(key, (dict, list)):
        raise StepFailed(f"Step '{step['id']}': the batching key {step['key']} is {'missing' if key is None else 'not a plain value'}.")
    key = str(key)[:200]
    item = {k: context[k] for k in ("data", "recipient", "event", "row") if context.get(k) is not None}
    item["run_id"] = run.id
    for _ in range(3):
        batch = (Batch.objects.select_for_update()
                 .filter(workflow_version=version, step_id=step["id"], key=key, status=BatchStatus.OPEN).first())
        if batch is not None:
            if batch.size < step["max_items"]:
                BatchItem.objects.create(batch=batch, run=run, item=item)
                Batch.objects.filter(id=batch.id).update(size=batch.size + 1)
                return StepOutcome(output={"batched_into": batch.owner_id, "batch": batch.id}, end_run=True)
            # Full: close it early (its owner carries on at its window's end) and open the next one.
            Batch.objects.filter(id=batch.id).update(status=BatchStatus.CLOSED)
        try:
            with transaction.atomic():
                batch = Batch.objects.create(workflow_version=version, step_id=step["id"], key=key, owner=run,
                                             closes_at=now + timedelta(seconds=step["window"]), size=1)
        except IntegrityError:
            continue  # another run opened it meanwhile: join that one
        BatchItem.objects.create(batch=batch, run=run, item=item)
        run.state.setdefault("batch_owned", {})[step["id"]] = batch.id
        return StepOutcome(finished=False, waiting_on=WaitingOn.BATCH, resume_at=batch.closes_at)
    raise StepRetry(f"Step '{step['id']}': the batch for key {key!r} is contended; trying again.")


STEP_EXECUTORS: dict[str, Callable] = {"notify": notify_execute, "wait": wait_execute, "batch": batch_execute}
