"""`wait`: for a duration, until a timestamp in the data (with an offset), or until a condition holds.

A wait is a time in the database (`resume_at`) that a beat tick resumes, never a countdown in memory. A
condition is checked now and every `every` seconds until it holds or `timeout` passes;
`steps.<id>.timed_out` says which. For a database event, the rows are read again at each re-check.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from django.utils import timezone
from django.utils.dateparse import parse_datetime

from apps.workflows.conditions import data_condition_holds, path_get

from ..models import WaitingOn
from .base import StepCall, StepFailed, StepOutcome, StepType, step_type_register


def _timestamp(value, what: str) -> datetime:
    parsed = parse_datetime(value) if isinstance(value, str) else None
    if parsed is None:
        raise StepFailed(f"{what} is not a timestamp (ISO 8601 expected), got {value!r}.")
    if timezone.is_naive(parsed):
        parsed = parsed.replace(tzinfo=UTC)
    return parsed


class WaitStep(StepType):
    name = "wait"

    def batchable_for(self, step: dict) -> bool:
        # A condition may read the customer database again (rows_refresh): that waits in its own transaction.
        return "condition" not in step

    def execute(self, call: StepCall) -> StepOutcome:
        run, step, context = call.run, call.step, call.context
        now = timezone.now()
        if "duration" in step:
            until = now + timedelta(seconds=step["duration"])
            return StepOutcome(output={"until": until.isoformat()}, waiting_on=WaitingOn.TIME, resume_at=until)
        if "until" in step:
            until = _timestamp(path_get(context, step["until"]), f"Step '{step['id']}': {step['until']}") + timedelta(
                seconds=step.get("offset") or 0
            )
            if until <= now:  # already past: nothing to wait for
                return StepOutcome(output={"until": until.isoformat(), "waited": False})
            return StepOutcome(output={"until": until.isoformat()}, waiting_on=WaitingOn.TIME, resume_at=until)
        # Until a condition holds: checked now and every `every` seconds, until the deadline.
        deadlines = run.state.setdefault("deadlines", {})
        rechecking = step["id"] in deadlines
        deadline = (
            datetime.fromisoformat(deadlines[step["id"]]) if rechecking else now + timedelta(seconds=step["timeout"])
        )
        deadlines[step["id"]] = deadline.isoformat()
        if rechecking:
            call.rows_refresh()  # the condition is about the rows as they are now
        if data_condition_holds(step["condition"], context):
            return StepOutcome(output={"timed_out": False})
        if now >= deadline:
            return StepOutcome(output={"timed_out": True})
        return StepOutcome(
            finished=False,
            waiting_on=WaitingOn.CONDITION,
            resume_at=min(deadline, now + timedelta(seconds=step["every"])),
        )


step_type_register(WaitStep())
