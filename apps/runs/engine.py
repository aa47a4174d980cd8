"""Durable execution of runs: one interpreter, two ways of writing what it does.

A run's position is one integer, the next instruction of its version's program (apps.workflows.program),
and everything its steps produced lives in `Run.state`. Each step is written in one transaction together
with the run's new position, so a crash at any line repeats at most the steps in progress, whose writes
rolled back with them. Nothing waits in memory or in a Celery countdown:

- a wait stores `resume_at` and the run becomes `waiting`; a beat tick (`runs_resume_due`) claims due
  runs with a conditional update, so two ticks never resume the same run, and queues them again;
- a notify step waits for its delivery (`waiting_on=delivery`): when the delivery is sent the run goes
  on (or completes, if it was the last step); when it fails for good the run fails;
- a transient step error is retried with the workflow's back-off, a permanent one fails the run;
- a failed run is escalated to operators once (apps.runs.escalation).

The interpreter (`_advance`) executes a step through the step-type registry (apps.runs.steps) and stages
what it writes in a `Writes`: the step's row, its deliveries (built by
apps.deliveries.services.delivery_build), audit rows, the run's new position. Two strategies commit it:

- immediate (`run_execute`, `_execute`): one run, each step in a transaction of its own;
- batched (`BatchedRuns`: `runs_execute` for queued runs, a trigger request's new runs): many runs in the
  caller's one transaction, their rows written together in a few statements. A run that reaches a step
  that must have its own transaction (a batch step, a wait for a condition; rows to read first) is handed
  over to the immediate strategy once the batch has committed.

Either way deliveries are written claimed, and the task that wrote them sends them once they are
committed (a task that dies first leaves them to the reconciler). One place completes a run
(`_complete`) and one fails it (`_fail`); what started a run comes from its trigger source
(apps.runs.triggers).
"""

from __future__ import annotations

import copy
import logging
import time
from contextlib import contextmanager
from datetime import datetime, timedelta

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import DatabaseError, InterfaceError, OperationalError, connection, transaction
from django.db.models import F
from django.utils import timezone

from apps.audit.services import AuditEntry, audit_record, audit_record_many
from apps.core import exactjson, metrics
from apps.core.bulk import insert_rows
from apps.core.exceptions import Conflict, NotFound
from apps.core.hints import hint, hint_on_commit
from apps.core.instances import instance_build
from apps.deliveries.backoff import retry_delay, retry_schedule, scheduled_delay
from apps.deliveries.models import DeliveryStatus
from apps.deliveries.services import deliveries_send_claimed, deliveries_write, status_events_record
from apps.tenants.models import Organization, Product
from apps.workflows.models import WorkflowVersion
from apps.workflows.program import program_for, programs_by_version

from .models import Escalation, EscalationDecision, Run, RunStatus, RunStep, StepStatus, WaitingOn
from .steps import StepCall, StepFailed, StepRetry, step_type_get
from .triggers.base import trigger_source_get

logger = logging.getLogger(__name__)

RUN_BATCH = 100
RESUME_LIMIT = 10_000
EXECUTE_TASK = "apps.runs.tasks.runs_execute"


class ClaimLost(Exception):
    """Another worker took the run over (our lease had expired): stop without writing."""


def _lease():
    return timezone.now() + timedelta(seconds=settings.ROWBELL_LEASE_SECONDS)


def runs_enqueue(run_ids: list[int], priority: str) -> None:
    """Hint workers now to execute these queued runs, RUN_BATCH per hint, on the queue `priority`. Raises
    what the broker raises (see runs_enqueue_on_commit for the form that never does)."""
    for start in range(0, len(run_ids), RUN_BATCH):
        hint(EXECUTE_TASK, [run_ids[start : start + RUN_BATCH]], queue=priority)


def runs_enqueue_on_commit(run_ids: list[int], priority: str) -> None:
    """runs_enqueue once the current transaction commits; a hint the broker does not take is logged and
    left to the reconciler (never raises)."""
    for start in range(0, len(run_ids), RUN_BATCH):
        hint_on_commit(EXECUTE_TASK, [run_ids[start : start + RUN_BATCH]], queue=priority)


def _cause(run: Run) -> dict:
    """What started a run, for its audit rows (its trigger source says how: {"request_id": ...}...)."""
    return trigger_source_get(run.source).cause(run.cause_id)


# --- What steps see -----------------------------------------------------------------------------


def run_context(run: Run) -> dict:
    """The template context of a run (its workflow version, product and cause loaded: runs_attach): `data`,
    `recipient`, `workflow`, `request_id`, `run_id`, `timestamp`, `steps` (what earlier steps produced, by
    id; the run's own state), what its trigger source adds (`event`, `row`, `rows`...) and `batch`."""
    version = run.workflow_version
    context = {
        "data": {},
        "recipient": run.recipient,
        "workflow": {"key": version.workflow.key, "version": version.version},
        "request_id": None,
        "run_id": run.id,
        "timestamp": run.created_at.isoformat(),
        "steps": run.state.setdefault("steps", {}),
    }
    trigger_source_get(run.source).context(run, context)
    if "batch" in run.state:
        context["batch"] = run.state["batch"]
    return context


def runs_attach(runs: list[Run], *, causes: bool = True) -> None:
    """Give runs what executing them reads: their workflow versions (with the workflow), products and
    organizations, loaded once and shared (a join would build and parse them again for every run), and, with `causes`,
    what their trigger sources need (TriggerSource.load)."""
    versions = WorkflowVersion.objects.select_related("workflow").in_bulk({r.workflow_version_id for r in runs})
    products = Product.objects.in_bulk({r.product_id for r in runs})
    wanted = {r.organization_id for r in runs if r.organization_id is not None}
    organizations = Organization.objects.in_bulk(wanted) if wanted else {}
    by_source: dict[str, list[Run]] = {}
    for run in runs:
        # Straight into the fields cache, as the descriptors would (they cost more than the rest of this).
        cache = run._state.fields_cache
        cache["workflow_version"], cache["product"] = versions[run.workflow_version_id], products[run.product_id]
        if run.organization_id is not None:
            cache["organization"] = organizations.get(run.organization_id)
        by_source.setdefault(run.source, []).append(run)
    if causes:
        for source, some in by_source.items():
            trigger_source_get(source).load(some)


_FINISHED = {RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED}


def _persisted(run: Run) -> None:
    """Remember the status and claim the run's row has now: its next write applies only if they still hold."""
    run._persisted = (run.status, run.claim)


# --- Writing ------------------------------------------------------------------------------------


# The new positions of runs, in one statement (Django's bulk_update builds a CASE per column). A row is
# written only if the run is still as it was read (`was`, `was_claim`): a run another worker took over
# matches nothing. A NULL state leaves the state as it is (it was not read).
_RUNS_UPDATE = """
UPDATE runs_run r
SET status = v.status, waiting_on = v.waiting_on, step_index = v.step_index, state = COALESCE(v.state, r.state),
    resume_at = v.resume_at, completed_at = v.completed_at, lease_until = v.lease_until, error = v.error,
    claim = v.claim, enqueued_at = v.enqueued_at, updated_at = %s,
    recipient = COALESCE(v.recipient, r.recipient), organization_id = COALESCE(v.organization_id, r.organization_id)
FROM jsonb_to_recordset(%s::jsonb) AS v(id bigint, status text, waiting_on text, step_index int, state jsonb,
     resume_at timestamptz, completed_at timestamptz, lease_until timestamptz, error text, claim int,
     enqueued_at timestamptz, was text, was_claim int, recipient jsonb, organization_id uuid)
WHERE r.id = v.id AND r.status = v.was AND r.claim = v.was_claim
"""

_RUN_COLUMNS = tuple(f.attname for f in Run._meta.concrete_fields)


class Writes:
    """What runs write, staged in memory and written by `flush` in a few statements (the caller's
    transaction): new and changed runs, step rows, deliveries (written claimed: `to_send` holds them
    for the caller to send after commit), audit rows, escalations, and runs to hint after commit.
    `mark` and `undo` drop what one run staged, when it fails half-way through a batch."""

    def __init__(self) -> None:
        self.runs: list[Run] = []
        self.steps: list[dict] = []
        self.steps_failed: list[tuple] = []  # (run id, step id, error): a step whose delivery failed later
        self.deliveries: list = []
        self.audits: list[AuditEntry] = []
        self.escalations: list[dict] = []
        self.hints: dict[str, list[int]] = {}
        self.to_send: list = []

    def mark(self) -> tuple:
        return (
            len(self.runs),
            len(self.steps),
            len(self.deliveries),
            len(self.audits),
            len(self.escalations),
            len(self.steps_failed),
        )

    def undo(self, mark: tuple) -> None:
        del self.runs[mark[0] :], self.steps[mark[1] :], self.deliveries[mark[2] :], self.audits[mark[3] :]
        del self.escalations[mark[4] :], self.steps_failed[mark[5] :]

    def run(self, run: Run) -> None:
        """Stage the run's row as it is now (its new position, status...)."""
        self.runs.append(run)

    def step(self, run: Run, pc: int, step: dict, output: dict | None = None, *, error: str = "") -> None:
        """Stage the row of a step the run executed: completed with `output` (kept in the run's state), or
        failed with `error`."""
        self.steps.append(
            {
                "run_id": run.id,
                "step_id": step["id"],
                "index": pc,
                "type": step["type"],
                "status": StepStatus.FAILED if error else StepStatus.COMPLETED,
                "output": output or {},
                "error": error[:2000],
            }
        )
        if not error:
            run.state["steps"][step["id"]] = output
            if run.state.get("attempts", {}).pop(step["id"], None) is not None:
                run.error = ""  # the retry's reason is over

    def delivery(self, delivery, audit) -> None:
        self.deliveries.append(delivery)
        if audit is not None:
            self.audits.append(audit)

    def audit(self, entry: AuditEntry) -> None:
        self.audits.append(entry)

    def hint(self, run: Run) -> None:
        """Hint a worker about the (queued) run once the transaction commits."""
        self.hints.setdefault(run.priority, []).append(run.id)

    def flush(self) -> None:
        """Write everything staged; raise ClaimLost (the caller's transaction must roll back) if a run changed
        under us. Deliveries written claimed are added to `to_send`."""
        now = timezone.now()
        latest = {run.id: run for run in self.runs}  # staged twice: the last one is the row
        new = [run for run in latest.values() if run._state.adding]
        changed = [run for run in latest.values() if not run._state.adding]
        if new:
            for run in new:
                run.updated_at = now
            insert_rows(Run, [{f: run.__dict__[f] for f in _RUN_COLUMNS} for run in new])
        if changed:
            rows = [
                {
                    "id": r.id,
                    "status": r.status,
                    "waiting_on": r.waiting_on,
                    "step_index": r.step_index,
                    "state": r.__dict__.get("state"),
                    "resume_at": r.resume_at,
                    "completed_at": r.completed_at,
                    "lease_until": r.lease_until,
                    "error": r.error,
                    "claim": r.claim,
                    "enqueued_at": r.enqueued_at,
                    "was": r._persisted[0],
                    "was_claim": r._persisted[1],
                    # Who a run is for, once its trigger source resolved it from its cause (a row's recipient
                    # and organization): written with the run's next position, else left as it is.
                    "recipient": r.recipient if r.__dict__.get("cause_resolved") else None,
                    "organization_id": r.organization_id if r.__dict__.get("cause_resolved") else None,
                }
                for r in changed
            ]
            with connection.cursor() as cursor:
                cursor.execute(_RUNS_UPDATE, [now, exactjson.dumps(rows, default=_iso)])
                if cursor.rowcount != len(rows):
                    raise ClaimLost()
            # A run its row routed to an organization is in that organization's audit trail from then on
            # (its `run.launched` was written before the row was read).
            self.audits.extend(
                AuditEntry(
                    action="run.routed",
                    target_type="run",
                    target_id=r.id,
                    product_id=r.product_id,
                    organization_id=r.organization_id,
                    data={"organization": (r.state.get("organization") or {}).get("external_id")},
                )
                for r in changed
                if r.__dict__.get("cause_resolved") and r.organization_id is not None
            )
        if self.deliveries:
            written = deliveries_write(self.deliveries, claim=True, now=now)
            self.to_send.extend(d for d in written if d.status == DeliveryStatus.SENDING)
        if self.steps:
            for row in self.steps:
                row["finished_at"] = now
            insert_rows(RunStep, self.steps)
        for run_id, step_id, error in self.steps_failed:
            RunStep.objects.filter(run_id=run_id, step_id=step_id).update(status=StepStatus.FAILED, error=error)
        if self.escalations:
            insert_rows(Escalation, [{**e, "created_at": now} for e in self.escalations])
        audit_record_many(self.audits)
        finished = metrics.increments()
        for run in latest.values():
            if run.status in _FINISHED and (
                run._state.adding or getattr(run, "_persisted", (None,))[0] not in _FINISHED
            ):
                finished[metrics.series(metrics.RUNS_FINISHED, status=run.status)] += 1
        metrics.counters_add(finished)
        for priority, ids in self.hints.items():
            runs_enqueue_on_commit(ids, priority)
        for run in latest.values():  # only once everything is written: a failed flush changes nothing
            run._state.adding = False
            run.__dict__.pop("cause_resolved", None)  # written: later positions leave it as it is
            _persisted(run)
        self.runs, self.steps, self.steps_failed, self.deliveries = [], [], [], []
        self.audits, self.escalations, self.hints = [], [], {}


def _iso(value):
    # Timestamps keep their microseconds (Django's encoder would cut them to milliseconds).
    if isinstance(value, datetime):
        return value.isoformat()
    return _DJANGO_JSON.default(value)


_DJANGO_JSON = DjangoJSONEncoder()


# --- How runs end -------------------------------------------------------------------------------


def _complete(run: Run, writes: Writes, *, data: dict | None = None) -> None:
    """The one place a run completes: its status, `completed_at` and the `run.completed` audit row (with
    what started it, and `data`)."""
    run.status, run.completed_at, run.lease_until = RunStatus.COMPLETED, timezone.now(), None
    run.waiting_on, run.resume_at = WaitingOn.NOTHING, None
    writes.run(run)
    writes.audit(
        AuditEntry(
            action="run.completed",
            target_type="run",
            target_id=run.id,
            product_id=run.product_id,
            organization_id=run.organization_id,
            data={**_cause(run), **(data or {})},
        )
    )


def _fail(run: Run, writes: Writes, *, pc: int, step: dict, message: str, step_failed: bool) -> None:
    """The one place a run fails, at instruction `pc` (its `step`): its status, error and `completed_at`,
    the failed step's row (written failed, or, when the step ran and what it started failed afterwards, a
    delivery, marked failed), the `run.failed` audit row and the escalation that tells operators."""
    run.state["failed_at"] = pc
    run.status, run.error, run.completed_at, run.lease_until = RunStatus.FAILED, message[:2000], timezone.now(), None
    run.waiting_on, run.resume_at = WaitingOn.NOTHING, None
    writes.run(run)
    if step_failed:
        writes.step(run, pc, step, error=message)
    else:
        writes.steps_failed.append((run.id, step["id"], message[:2000]))
    writes.audit(
        AuditEntry(
            action="run.failed",
            target_type="run",
            target_id=run.id,
            product_id=run.product_id,
            organization_id=run.organization_id,
            data={**_cause(run), "step": step["id"], "error": message[:500]},
        )
    )
    writes.escalations.append(
        {
            "run_id": run.id,
            "product_id": run.product_id,
            "error": message[:2000],
            "notified_at": None,
            "decision": "",
            "decided_at": None,
            "decided_by": "",
        }
    )


def _retry_or_fail(run: Run, writes: Writes, *, pc: int, step: dict, message: str) -> None:
    """A transient step error: try the step again after the workflow's retry policy, or fail once its attempts
    are spent. The policy is the workflow's `retry` (a schedule, or exponential back-off), else the service's
    step schedule (ROWBELL_RETRY_SCHEDULE_STEP; apps.deliveries.backoff.retry_schedule)."""
    attempts = run.state.setdefault("attempts", {})
    attempts[step["id"]] = attempts.get(step["id"], 0) + 1
    policy = run.workflow_version.definition.get("retry", {})
    schedule = retry_schedule("step", policy=policy)
    most = (
        len(schedule) + 1
        if schedule is not None
        else policy.get("max_attempts", settings.ROWBELL_DELIVERY_MAX_ATTEMPTS)
    )
    if attempts[step["id"]] >= most:
        _fail(
            run,
            writes,
            pc=pc,
            step=step,
            message=f"{message} (gave up after {attempts[step['id']]} attempts)",
            step_failed=True,
        )
        return
    delay = (
        scheduled_delay(schedule, attempts[step["id"]], max_attempts=most)
        if schedule is not None
        else retry_delay(attempts[step["id"]], base=policy.get("backoff"), cap=policy.get("max_backoff"))
    )
    run.status, run.waiting_on, run.lease_until = RunStatus.WAITING, WaitingOn.RETRY, None
    run.resume_at, run.step_index = timezone.now() + timedelta(seconds=delay), pc
    # Shown while it waits (API, admin): why, and which attempt comes next. Cleared when the step completes.
    run.error = f"Step '{step['id']}' will be tried again (attempt {attempts[step['id']] + 1} of {most}): {message}"[
        :2000
    ]
    writes.run(run)
    writes.audit(
        AuditEntry(
            action="run.retry_scheduled",
            target_type="run",
            target_id=run.id,
            product_id=run.product_id,
            organization_id=run.organization_id,
            data={
                "step": step["id"],
                "attempt": attempts[step["id"]],
                "error": message[:500],
                "resume_at": run.resume_at.isoformat(),
            },
        )
    )


def _step_error(run: Run, program, pc: int, exc: Exception, writes: Writes) -> None:
    """What an exception from the step at `pc` does to the run: StepRetry retries it later, anything else
    fails the run now (an unexpected error, a bug or bad data, fails it once instead of looping)."""
    step = program[pc].step if pc < len(program) else {"id": "", "type": ""}
    if isinstance(exc, StepRetry):
        _retry_or_fail(run, writes, pc=pc, step=step, message=str(exc))
        return
    message = str(exc) if isinstance(exc, StepFailed) else f"Internal error: {exc.__class__.__name__}: {exc}"
    _fail(run, writes, pc=pc, step=step, message=message, step_failed=True)


# --- The interpreter ----------------------------------------------------------------------------


def _next(program, pc: int) -> int:
    """The next instruction that is not a jump, from `pc` (len(program): the run is past its end)."""
    while pc < len(program) and program[pc].op == "jump":
        pc = program[pc].to
    return pc


def _advance(run: Run, program, pc: int, context: dict, writes: Writes, memo: dict | None) -> str | None:
    """Execute the step at instruction `pc` (not a jump) and stage what it writes: its row and output, and
    the run's new status if it stops here. Returns that status (completed, waiting), or None when the run
    goes on (at `run.step_index`)."""
    instruction = program[pc]
    step = instruction.step
    run.step_index = pc
    outcome = step_type_get(step["type"]).execute(
        StepCall(
            run=run,
            step=step,
            instruction=instruction,
            pc=pc,
            context=context,
            memo=memo,
            writes=writes,
            source=trigger_source_get(run.source),
        )
    )
    if outcome.finished:
        writes.step(run, pc, step, outcome.output)
        run.step_index = pc + 1 if outcome.next_pc is None else outcome.next_pc
    if outcome.end_run:
        _complete(run, writes, data={"ended_at": step["id"], **outcome.output})
        return RunStatus.COMPLETED
    if outcome.waiting_on:
        run.status, run.waiting_on, run.resume_at, run.lease_until = (
            RunStatus.WAITING,
            outcome.waiting_on,
            outcome.resume_at,
            None,
        )
        writes.run(run)
        return RunStatus.WAITING
    return None


# --- Immediate: one run, a transaction per step -------------------------------------------------


def run_execute(*, run_id: int) -> str | None:
    """Execute one queued run, each step in its own transaction, until it ends or waits; send what it
    queued; return its status then (None if it was not queued, or another worker took it over).

    1. Claim the run: queued -> running, with a lease (a conditional update: one worker wins).
    2. Execute its steps (_execute).
    """
    claimed = Run.objects.filter(id=run_id, status=RunStatus.QUEUED).update(
        status=RunStatus.RUNNING, lease_until=_lease(), claim=F("claim") + 1, updated_at=timezone.now()
    )
    if not claimed:
        return None
    run = Run.objects.get(id=run_id)
    runs_attach([run])
    _persisted(run)
    return _execute(run)


def _execute(run: Run) -> str | None:
    """The immediate strategy, for a claimed (running) run: each step commits in its own transaction with
    the run's new position; the deliveries it wrote are sent once it stops."""
    writes = Writes()
    status = _execute_steps(run, writes)
    if writes.to_send:
        deliveries_send_claimed(writes.to_send)
    return status


def _execute_steps(run: Run, writes: Writes) -> str | None:
    source = trigger_source_get(run.source)
    program = program_for(run.workflow_version)
    pc = run.step_index
    try:
        context = run_context(run)
        if source.prepare_needed(run):
            source.prepare(run, context)  # saved with the run's next step
        while True:
            pc = _next(program, run.step_index)
            with transaction.atomic():
                status: str | None
                if pc >= len(program):
                    run.step_index = pc
                    _complete(run, writes)
                    status = RunStatus.COMPLETED
                else:
                    status = _advance(run, program, pc, context, writes, None)
                    if status is None:
                        run.lease_until = _lease()
                        writes.run(run)
                writes.flush()
            if status is not None:
                return status
    except ClaimLost:
        logger.warning("Run %s was taken over by another worker; stopping.", run.id)
        return None
    except (OperationalError, InterfaceError):
        raise  # the service database is away: the lease expires and the reconciler runs the step again
    except Exception as exc:
        if not isinstance(exc, (StepFailed, StepRetry)):
            logger.exception("Run %s failed at instruction %s", run.id, pc)
        writes.undo((0, 0, 0, 0, 0, 0))  # what the failed step staged was not written
        run.step_index = pc
        try:
            with transaction.atomic():
                _step_error(run, program, pc, exc, writes)
                writes.flush()
        except ClaimLost:
            logger.warning("Run %s was taken over by another worker; stopping.", run.id)
            return None
        return run.status


# --- Batched: many runs, one transaction --------------------------------------------------------


class ProductSlices:
    """How long one task has worked for each product, so that no product holds a worker for long.

    A batch works for each product for at most ROWBELL_PRODUCT_SLICE_SECONDS (seconds of wall-clock time:
    rendering, evaluating, writing), then leaves that product's remaining runs queued and sends them
    again on the `low` queue, behind every other product's waiting work. One product's slow templates
    (each render is itself bounded by ROWBELL_TEMPLATE_RENDER_SECONDS) then delay another product's
    deliveries by about one slice, not by the whole batch.
    """

    def __init__(self) -> None:
        self.limit = settings.ROWBELL_PRODUCT_SLICE_SECONDS
        self.used: dict = {}
        self.deferred: list[int] = []

    def spent(self, run: Run) -> bool:
        return self.used.get(run.product_id, 0.0) >= self.limit

    def defer(self, run: Run) -> None:
        self.deferred.append(run.id)

    @contextmanager
    def timing(self, run: Run):
        began = time.monotonic()
        try:
            yield
        finally:
            self.used[run.product_id] = self.used.get(run.product_id, 0.0) + time.monotonic() - began

    def requeue(self) -> None:
        runs_requeue_low(self.deferred)


def runs_requeue_low(run_ids: list[int]) -> None:
    """Hint queued runs whose product's time slice is spent to the `low` queue, behind other work.

    Never raises: the runs are queued in the database, and the reconciler sends a lost hint again.
    """
    if not run_ids:
        return
    logger.info("Product time slice spent: %d runs sent again on the low queue", len(run_ids))
    try:
        runs_enqueue(run_ids, "low")
    except Exception:
        logger.warning("Could not re-send %d deferred runs; the reconciler will.", len(run_ids), exc_info=True)


class BatchedRuns:
    """The batched strategy: many runs advanced in memory, their writes staged together.

    1. `advance(runs)`, inside the caller's transaction: runs read from the database and locked there
       (queued), or new runs built in memory (written as they stop, never as queued first). Each goes as
       far as it can without a transaction of its own: until it completes, waits (for its delivery, for a
       time) or fails, or reaches a step that needs one (it is then claimed: running, with a lease).
       A run whose product's time slice is spent is left queued (ProductSlices).
    2. `write()`, in the same transaction: everything in a few statements.
    3. `finish()`, after commit: send the deliveries (written claimed), execute the claimed runs one by one
       (the immediate strategy), hint the runs left queued to the `low` queue.
    """

    def __init__(self) -> None:
        self.writes = Writes()
        self.memo: dict = {}
        self.slices = ProductSlices()
        self.handed_over: list[Run] = []

    def advance(self, runs: list[Run]) -> None:
        by_source: dict[str, list[Run]] = {}
        for run in runs:
            if trigger_source_get(run.source).prepare_needed(run):
                by_source.setdefault(run.source, []).append(run)
        for source, needing in by_source.items():  # e.g. the rows of per-row runs, one query per table
            trigger_source_get(source).prepare_many(needing)
        for run in runs:
            if self.slices.spent(run):
                self.slices.defer(run)
                if run._state.adding:
                    self.writes.run(run)  # a new run is written queued, untouched
                continue
            with self.slices.timing(run):
                self._advance(run)

    def _advance(self, run: Run) -> None:
        program = program_for(run.workflow_version)
        mark, state, pc = self.writes.mark(), copy.deepcopy(run.state), run.step_index
        try:
            if trigger_source_get(run.source).prepare_needed(run):
                self._hand_over(run)  # reading outside Rowbell waits in a transaction of its own
                return
            context = run_context(run)
            while True:
                pc = _next(program, run.step_index)
                if pc >= len(program):
                    run.step_index = pc
                    _complete(run, self.writes)
                    return
                step = program[pc].step
                if not step_type_get(step["type"]).batchable_for(step):
                    run.step_index = pc
                    self._hand_over(run)
                    return
                if _advance(run, program, pc, context, self.writes, self.memo):
                    return
        except DatabaseError:
            raise  # the batch's transaction is lost: see runs_execute
        except Exception as exc:
            if not isinstance(exc, (StepFailed, StepRetry)):
                logger.exception("Run %s failed at instruction %s", run.id, pc)
            # Nothing the run did in this batch is written; it fails (or retries) at the step that failed.
            self.writes.undo(mark)
            run.state, run.step_index = state, pc
            _step_error(run, program, pc, exc, self.writes)

    def _hand_over(self, run: Run) -> None:
        run.status, run.claim, run.lease_until = RunStatus.RUNNING, run.claim + 1, _lease()
        self.writes.run(run)
        self.handed_over.append(run)

    def write(self) -> None:
        self.writes.flush()

    def finish(self) -> None:
        # Sent first: these deliveries are leased to this task, and what follows may take a while.
        if self.writes.to_send:
            deliveries_send_claimed(self.writes.to_send)
        for run in self.handed_over:
            if self.slices.spent(run):
                # Claimed in the batch's transaction, not yet started: given back as it was.
                if Run.objects.filter(id=run.id, status=RunStatus.RUNNING, claim=run.claim).update(
                    status=RunStatus.QUEUED, lease_until=None, updated_at=timezone.now()
                ):
                    self.slices.defer(run)
                continue
            with self.slices.timing(run):
                _execute(run)
        self.slices.requeue()


# What a run's trigger source reads from outside Rowbell before its first step (TriggerSource.prepare_many).
_PREPARED = ("rows", "missing_ids", "related", "organization", "links_error")


def _prepared_outside(run_ids: list[int]) -> dict[int, Run]:
    """The queued runs among `run_ids` whose trigger source reads something outside Rowbell first (a
    database trigger's rows), with it read, by id: read before the batch locks its runs, so that a slow
    customer database holds no lock of Rowbell's. Never raises for what it reads (prepare_many)."""
    runs = list(Run.objects.filter(id__in=run_ids, status=RunStatus.QUEUED))
    needing: dict[str, list[Run]] = {}
    if runs:
        runs_attach(runs)
        for run in runs:
            if trigger_source_get(run.source).prepare_needed(run):
                needing.setdefault(run.source, []).append(run)
    for source, some in needing.items():
        trigger_source_get(source).prepare_many(some)
    return {run.id: run for some in needing.values() for run in some if "rows" in run.state}


def _prepared_take(run: Run, early: Run | None) -> None:
    """Give a locked run what was read for it before the lock, if it is still as it was read."""
    if early is None or early.claim != run.claim or "rows" in run.state:
        return
    for key in _PREPARED:
        if key in early.state:
            run.state[key] = early.state[key]
    if early.__dict__.get("cause_resolved"):
        run.recipient, run.organization_id = early.recipient, early.organization_id
        run.__dict__["cause_resolved"] = True
        if "organization" in early._state.fields_cache:
            run._state.fields_cache["organization"] = early._state.fields_cache["organization"]


def runs_execute(*, run_ids: list[int]) -> None:
    """Execute a batch of queued runs (the batched strategy, BatchedRuns): read what they need from outside
    Rowbell (unlocked), lock the ones still queued (FOR UPDATE SKIP LOCKED: runs another worker holds are
    skipped), advance them, write them in one transaction, then send their deliveries and execute what needs
    transactions of its own."""
    if not run_ids:
        return
    prepared = _prepared_outside(run_ids)
    batch = BatchedRuns()
    try:
        with transaction.atomic():
            runs = list(
                Run.objects.select_for_update(skip_locked=True)
                .filter(id__in=run_ids, status=RunStatus.QUEUED)
                .order_by("id")
            )
            if not runs:
                return
            for run in runs:
                _persisted(run)
            runs_attach(runs)
            for run in runs:
                _prepared_take(run, prepared.get(run.id))
            batch.advance(runs)
            batch.write()
    except (OperationalError, InterfaceError):
        raise  # the database is away: the runs stay queued and the reconciler hints them again
    except DatabaseError:
        # A step's write the database refused lost the whole batch: each run on its own, so that only the
        # one at fault fails.
        logger.exception("A batch of %d runs could not be written; executing them one by one.", len(run_ids))
        for run_id in run_ids:
            run_execute(run_id=run_id)
        return
    batch.finish()


# --- Resuming -----------------------------------------------------------------------------------


def runs_resume_due(*, limit: int = RESUME_LIMIT) -> int:
    """Queue the waiting runs whose time has come (waits, condition checks, retries, batch windows).

    Claimed under SKIP LOCKED with a conditional update in one transaction, so two ticks never resume
    the same run; the hints go out after commit (a lost one is re-sent by the reconciler)."""
    now = timezone.now()
    with transaction.atomic():
        due = list(
            Run.objects.select_for_update(skip_locked=True)
            .filter(status=RunStatus.WAITING, resume_at__lte=now)
            .exclude(waiting_on=WaitingOn.DELIVERY)
            .order_by("resume_at")
            .values_list("id", "priority")[:limit]
        )
        if not due:
            return 0
        Run.objects.filter(id__in=[i for i, _ in due], status=RunStatus.WAITING).update(
            status=RunStatus.QUEUED, waiting_on=WaitingOn.NOTHING, resume_at=None, enqueued_at=now, updated_at=now
        )
        by_priority: dict[str, list[int]] = {}
        for run_id, priority in due:
            by_priority.setdefault(priority, []).append(run_id)
        for priority, ids in by_priority.items():
            runs_enqueue_on_commit(ids, priority)
    return len(due)


_SETTLE_COLUMNS = (
    "id",
    "status",
    "waiting_on",
    "resume_at",
    "step_index",
    "completed_at",
    "lease_until",
    "error",
    "claim",
    "enqueued_at",
    "product_id",
    "organization_id",
    "source",
    "cause_id",
    "workflow_version_id",
    "priority",
)
# The runs still waiting for these deliveries, locked until the deliveries' transaction ends.
_SETTLE_SELECT = (
    f"SELECT {', '.join(_SETTLE_COLUMNS)} FROM runs_run "
    "WHERE id = ANY(%s) AND status = 'waiting' AND waiting_on = 'delivery' ORDER BY id FOR UPDATE"
)


def runs_deliveries_settled(settled: list[tuple]) -> None:
    """Runs waiting for these deliveries move on: (run id, step id, sent or not, why not). Called inside
    the transaction that finalized the deliveries, so a delivery is final if and only if its run moved on.
    A delivery of another step than the one a run waits on (a replay of an earlier one) moves nothing.
    A run whose delivery was its last step completes here; one with steps left is queued for a worker."""
    outcomes = {run_id: (step_id, ok, message) for run_id, step_id, ok, message in settled}
    # What moving them on reads and writes (not their state: read only for a run that fails).
    with connection.cursor() as cursor:
        cursor.execute(_SETTLE_SELECT, [list(outcomes)])
        runs = [instance_build(Run, dict(zip(_SETTLE_COLUMNS, row)), saved=True) for row in cursor.fetchall()]
    programs = programs_by_version({r.workflow_version_id for r in runs})
    writes = Writes()
    now = timezone.now()
    for run in runs:
        _persisted(run)
        step_id, ok, message = outcomes[run.id]
        program = programs[run.workflow_version_id]
        if step_id and not (
            0 < run.step_index <= len(program) and program[run.step_index - 1].step.get("id") == step_id
        ):
            continue
        if not ok:
            run.refresh_from_db(fields=["state"])
            _fail(
                run,
                writes,
                pc=run.step_index - 1,
                step=program[run.step_index - 1].step,
                message=message,
                step_failed=False,
            )
        elif _next(program, run.step_index) >= len(program):
            _complete(run, writes)  # the delivery was the last step: no other trip through a worker
        else:
            run.status, run.waiting_on, run.enqueued_at = RunStatus.QUEUED, WaitingOn.NOTHING, now
            writes.run(run)
            writes.hint(run)
    writes.flush()


# --- Operators' actions -------------------------------------------------------------------------


class RunActionRefused(Conflict):
    """The run is not in a state this action applies to (409)."""


# What each action applies to. The services refuse by these rules and the admin offers only the actions they
# allow (run_actions_open), so a button is never shown for an action that would be refused.
CANCELLABLE = (RunStatus.QUEUED, RunStatus.WAITING)
RERUNNABLE = (RunStatus.FAILED, RunStatus.CANCELLED)
FINISHED = (RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED)
# Which version a re-run executes: the one the run ran ("original", the default) or the workflow's published
# one now ("latest": a fix published since the failure).
RERUN_VERSIONS = ("original", "latest")
DISMISS_REFUSED = "Only a failed run waiting for a decision can be dismissed."


def run_cancel_refusal(*, run: Run) -> str | None:
    """Why run_cancel would refuse `run` as it is (the message it refuses with), or None when it applies."""
    if run.status not in CANCELLABLE:
        return f"Only a queued or waiting run can be cancelled; this one is {run.status}."
    return None


def run_dismiss_refusal(*, run: Run) -> str | None:
    """Why run_dismiss would refuse `run` (no escalation of it waits for a decision), or None. One query."""
    if not Escalation.objects.filter(run_id=run.id, decided_at__isnull=True).exists():
        return DISMISS_REFUSED
    return None


def _blocking_rerun(run: Run) -> tuple[int, str] | None:
    """(id, status) of a re-run of `run` that has not ended (one at a time) or that completed (its messages were
    sent: re-running again would send them twice), or None when every re-run failed or was cancelled."""
    return (
        Run.objects.filter(rerun_of=run)
        .exclude(status__in=RERUNNABLE)
        .values_list("id", "status")
        .order_by("id")
        .first()
    )


def _cause_shape(trigger: dict) -> tuple:
    """What a run's cause must match in the version that executes it: a request's recipient, or a row of a
    table (reached the same way, with as many runs per statement)."""
    if trigger.get("type") != "database":
        return (trigger.get("type", "api"),)
    return (
        "database",
        trigger.get("connection"),
        trigger.get("table"),
        trigger.get("through"),
        trigger.get("for_each"),
    )


def _step_at(version: WorkflowVersion, pc: int) -> str:
    program = program_for(version)
    return program[pc].step.get("id", "") if pc < len(program) else ""


def _published_version(version: WorkflowVersion) -> WorkflowVersion | None:
    """The version of `version`'s workflow that is published now (None when it is unpublished)."""
    return WorkflowVersion.objects.filter(workflow_id=version.workflow_id, workflow__published_version=F("id")).first()


def _rerun_target(run: Run, on: str) -> WorkflowVersion | None:
    """The version a re-run `on` "original" or "latest" executes (None: "latest", and nothing is published)."""
    return run.workflow_version if on == "original" else _published_version(run.workflow_version)


def _rerun_plan(
    run: Run, *, from_start: bool, version: WorkflowVersion | None, pending: tuple[int, str] | None
) -> tuple[str | None, dict]:
    """(Why a re-run of `run` executing `version` (_rerun_target) is refused, or None; the plan: {"step_index":
    where it starts, "step_id": the failed step's id, "" from the start}). `pending` is _blocking_rerun(run): a
    re-run still going, or one that completed."""
    original = run.workflow_version
    plan = {"step_index": 0, "step_id": ""}
    if run.status not in RERUNNABLE:
        return f"Only a failed or cancelled run can be re-run; this one is {run.status}.", plan
    if not from_start and "failed_at" not in run.state:
        return "This run did not fail at a step: re-run it from the start.", plan
    if pending and pending[1] == RunStatus.COMPLETED:
        return (
            f"Run {pending[0]}, a re-run of this one, completed: its messages were sent, and another re-run would "
            "send them again.",
            plan,
        )
    if pending:
        return f"Run {pending[0]}, a re-run of this one, has not ended yet.", plan
    if version is None:
        return f"The workflow has no published version now: re-run it on v{original.version}, the run's.", plan
    if _cause_shape(version.definition["trigger"]) != _cause_shape(original.definition["trigger"]):
        return (
            f"v{version.version} is triggered differently from v{original.version} (another trigger type, table "
            "or connection): it cannot take this run's cause. Re-run it on the run's version.",
            plan,
        )
    if not from_start:
        plan["step_id"] = step_id = _step_at(original, run.state["failed_at"])
        plan["step_index"] = run.state["failed_at"]
        if version.id != original.id:
            program = program_for(version)
            found = [pc for pc, i in enumerate(program) if i.op != "jump" and i.step.get("id") == step_id]
            if not step_id or not found:
                named = f" '{step_id}'" if step_id else ""
                return f"The failed step{named} is not in v{version.version}: re-run it from the start.", plan
            plan["step_index"] = found[0]
    return None, plan


def run_rerun_refusal(*, run: Run, from_start: bool, on: str = "original") -> str | None:
    """Why run_rerun would refuse `run` now (the message it refuses with), or None when it would re-run it."""
    version = _rerun_target(run, on)
    return _rerun_plan(run, from_start=from_start, version=version, pending=_blocking_rerun(run))[0]


def run_latest_version(*, run: Run) -> WorkflowVersion | None:
    """The workflow's published version when it is not the one `run` ran (what a re-run "on the latest
    published version" would execute), else None."""
    version = _published_version(run.workflow_version)
    return version if version is not None and version.id != run.workflow_version_id else None


def run_actions_open(*, run: Run) -> dict[str, str | None]:
    """Which operators' actions apply to `run` now, by the rules its services refuse by: {action: None when it
    applies, else why not}, for "cancel", "dismiss", "rerun_from_failed_step", "rerun_from_start" and, when a
    newer version is published, "rerun_from_failed_step_on_latest", "rerun_from_start_on_latest". A few
    queries whatever the run."""
    pending = _blocking_rerun(run) if run.status in RERUNNABLE else None
    open_ = {"cancel": run_cancel_refusal(run=run), "dismiss": run_dismiss_refusal(run=run)}
    latest = run_latest_version(run=run) if run.status in RERUNNABLE else None
    for version, suffix in ((run.workflow_version, ""), (latest, "_on_latest")):
        if version is None:
            continue
        for from_start, name in ((False, "rerun_from_failed_step"), (True, "rerun_from_start")):
            open_[name + suffix] = _rerun_plan(run, from_start=from_start, version=version, pending=pending)[0]
    return open_


def _cancel(runs, *, actor: str, reason: str) -> list[int]:
    """Cancel the queued and waiting runs among `runs` (a queryset); return their ids. Their held or
    queued deliveries are discarded; a batch one was collecting is closed (the runs that joined it ended
    there). Each cancelled run gets an audit row naming the actor."""
    from apps.deliveries.models import Delivery

    from .models import Batch, BatchStatus

    now = timezone.now()
    pending = (DeliveryStatus.QUEUED, DeliveryStatus.HELD)
    with transaction.atomic():
        rows = list(
            runs.select_for_update()
            .filter(status__in=(RunStatus.QUEUED, RunStatus.WAITING))
            .values_list("id", "product_id", "organization_id", "source", "cause_id")
        )
        ids = [r[0] for r in rows]
        Run.objects.filter(id__in=ids).update(
            status=RunStatus.CANCELLED,
            completed_at=now,
            waiting_on="",
            resume_at=None,
            lease_until=None,
            updated_at=now,
        )
        metrics.counters_add({metrics.series(metrics.RUNS_FINISHED, status=RunStatus.CANCELLED): len(ids)})
        discarded: dict[int, list[str]] = {}
        delivery_ids = []
        for delivery_id, run_id, message_id in Delivery.objects.filter(run_id__in=ids, status__in=pending).values_list(
            "id", "run_id", "message_id"
        ):
            discarded.setdefault(run_id, []).append(message_id)
            delivery_ids.append(delivery_id)
        Delivery.objects.filter(id__in=delivery_ids).update(
            status=DeliveryStatus.DISCARDED, completed_at=now, last_error="The run was cancelled.", updated_at=now
        )
        status_events_record(
            [(i, DeliveryStatus.DISCARDED, {"reason": "run cancelled", "by": actor}) for i in delivery_ids],
            at=now,
            source="operator",
        )
        Batch.objects.filter(owner_id__in=ids, status=BatchStatus.OPEN).update(status=BatchStatus.CLOSED)
        audit_record_many(
            [
                AuditEntry(
                    action="run.cancelled",
                    target_type="run",
                    target_id=run_id,
                    product_id=product_id,
                    organization_id=organization_id,
                    actor=actor,
                    data={
                        **trigger_source_get(source).cause(cause_id),
                        "reason": reason,
                        "discarded_deliveries": discarded.get(run_id, []),
                    },
                )
                for run_id, product_id, organization_id, source, cause_id in rows
            ]
        )
    return ids


def run_cancel(*, run: Run, actor: str) -> Run:
    """Cancel a queued or waiting run (see _cancel); anything else is refused (RunActionRefused)."""
    if not _cancel(Run.objects.filter(id=run.id), actor=actor, reason="cancelled"):
        run.refresh_from_db()
        raise RunActionRefused(run_cancel_refusal(run=run) or "This run can no longer be cancelled.")
    run.refresh_from_db()
    return run


def runs_cancel_for_workflow(*, workflow, actor: str) -> int:
    """Cancel every queued or waiting run of a workflow (all versions); return how many."""
    return len(
        _cancel(Run.objects.filter(workflow_version__workflow=workflow), actor=actor, reason="workflow unpublished")
    )


def run_rerun(*, run: Run, from_start: bool, actor: str, on: str = "original") -> Run:
    """Run a failed (or cancelled) run again as a new run linked to it (`rerun_of`), with the same cause:
    from the start, or from the step that failed with what the steps before it produced.

    `on` says which version the new run executes: "original" (the default), the version the run ran; "latest",
    the workflow's published version now (a fix published since), from the same step (found by its id). The
    audit row (`run.rerun`) names the version, and which of the two it is.

    Refused (RunActionRefused, see run_rerun_refusal) for a run that is not failed or cancelled, from the
    failed step of a run that did not fail at one, while an earlier re-run of it has not ended, on "latest"
    when nothing is published, when the published version is triggered differently (it cannot take the
    run's cause) or lacks the failed step. NotFound when the run was deleted (retention).
    """
    if on not in RERUN_VERSIONS:
        raise ValueError(f"on must be one of {RERUN_VERSIONS}")
    now = timezone.now()
    with transaction.atomic():
        # One re-run at a time: a second call (a double click, API and admin together) is refused while
        # the first one has not ended. A run retention deleted meanwhile is not there to re-run.
        locked = (
            Run.objects.select_for_update(of=("self",)).select_related("workflow_version").filter(id=run.id).first()
        )
        if locked is None:
            raise NotFound("This run no longer exists (deleted past its retention).")
        version = _rerun_target(locked, on)
        refusal, plan = _rerun_plan(locked, from_start=from_start, version=version, pending=_blocking_rerun(locked))
        if refusal or version is None:
            raise RunActionRefused(refusal or "Nothing to re-run this run on.")
        step_id = plan["step_id"]
        # What identifies the run's cause stays (a backfill's row key); what was read from outside Rowbell (rows,
        # related rows, the organization a row named) is read again, so that a corrected row is what the re-run
        # sees.
        state = {k: locked.state[k] for k in ("backfill_key",) if k in locked.state}
        if not from_start:
            state = {
                k: v
                for k, v in locked.state.items()
                if k not in ("failed_at", "attempts", "rows", "missing_ids", "related", "organization", "links_error")
            }
            state["steps"] = {k: v for k, v in locked.state.get("steps", {}).items() if k != step_id}
            state.get("deadlines", {}).pop(step_id, None)
            state.get("batch_owned", {}).pop(step_id, None)
        new = Run.objects.create(
            source=locked.source,
            cause_id=locked.cause_id,
            request_id=locked.request_id,
            event_id=locked.event_id,
            recipient_index=locked.recipient_index,
            product_id=locked.product_id,
            organization_id=locked.organization_id,
            workflow_version=version,
            recipient=locked.recipient,
            priority=locked.priority,
            state=state,
            step_index=plan["step_index"],
            rerun_of=locked,
            enqueued_at=now,
        )
        # The failure is decided: it no longer waits on the dashboard.
        Escalation.objects.filter(run_id=locked.id, decided_at__isnull=True).update(
            decision=EscalationDecision.RERUN, decided_at=now, decided_by=actor
        )
        audit_record(
            action="run.rerun",
            target_type="run",
            target_id=new.id,
            product_id=locked.product_id,
            organization_id=locked.organization_id,
            actor=actor,
            data={
                "rerun_of": locked.id,
                "from": "start" if from_start else "failed step",
                "step_index": plan["step_index"],
                "version": version.version,
                "on": "the run's version" if version.id == locked.workflow_version_id else "the latest published",
                "rerun_of_version": locked.workflow_version.version,
            },
        )
        runs_enqueue_on_commit([new.id], locked.priority)
    return new


def run_dismiss(*, run: Run, actor: str) -> Run:
    """Decide that a failed run needs nothing more (no re-run): it stops waiting for a decision on the
    dashboard. Anything but a failed run waiting for a decision is refused (RunActionRefused)."""
    with transaction.atomic():
        decided = Escalation.objects.filter(run_id=run.id, decided_at__isnull=True).update(
            decision=EscalationDecision.DISMISSED, decided_at=timezone.now(), decided_by=actor
        )
        if not decided:
            raise RunActionRefused(DISMISS_REFUSED)
        audit_record(
            action="run.dismissed",
            target_type="run",
            target_id=run.id,
            product_id=run.product_id,
            organization_id=run.organization_id,
            actor=actor,
        )
    return run
