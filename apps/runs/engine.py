"""Durable execution of runs.

A run's position is one integer, the next instruction of its version's program (apps.workflows.program),
and everything its steps produced lives in `Run.state`. Each step commits in one transaction together
with the run's new position, so a crash at any line repeats at most the step in progress, whose writes
rolled back with it. Nothing waits in memory or in a Celery countdown:

- a wait stores `resume_at` and the run becomes `waiting`; a beat tick (`runs_resume_due`) claims due
  runs with a conditional update, so two ticks never resume the same run, and queues them again;
- a notify step waits for its delivery (`waiting_on=delivery`): when the delivery is sent the run goes
  on (or completes, if it was the last step); when it fails for good the run fails;
- a transient step error is retried with the workflow's back-off, a permanent one fails the run;
- a failed run is escalated to operators once (apps.runs.escalation).
"""

from __future__ import annotations

import copy
import logging
import re
import time
from contextlib import contextmanager
from datetime import timedelta

import psycopg
from django.conf import settings
from django.db import InterfaceError, OperationalError, transaction
from django.db.models import F
from django.utils import timezone

from apps.audit.services import AuditEntry, audit_record, audit_record_many
from apps.core import exactjson
from apps.core.exceptions import Conflict
from apps.core.hints import hint, hint_many_on_commit
from apps.deliveries.backoff import retry_delay
from apps.workflows.program import program_for, programs_by_version

from .models import Escalation, EscalationDecision, Run, RunStatus, RunStep, StepStatus, WaitingOn
from .selectors import event_summary
from .steps import STEP_EXECUTORS, StepFailed, StepOutcome, StepRetry, notify_delivery_options, notify_render

logger = logging.getLogger(__name__)

RUN_BATCH = 100
RESUME_LIMIT = 10_000
_ROWS = re.compile(r"\brows?\b")


class ClaimLost(Exception):
    """Another worker took the run over (our lease had expired): stop without writing."""


def _lease():
    return timezone.now() + timedelta(seconds=settings.ROWBELL_LEASE_SECONDS)


def runs_enqueue(run_ids: list[int], priority: str) -> None:
    for start in range(0, len(run_ids), RUN_BATCH):
        hint("apps.runs.tasks.runs_execute", [run_ids[start:start + RUN_BATCH]], queue=priority)


def runs_enqueue_on_commit(run_ids: list[int], priority: str) -> None:
    """runs_enqueue once the transaction commits, in one round trip, under apps.core.hints' policy: never
    raises; a hint the broker did not take is logged and left to the reconciler."""
    hint_many_on_commit([("apps.runs.tasks.runs_execute", [run_ids[start:start + RUN_BATCH]], priority)
                         for start in range(0, len(run_ids), RUN_BATCH)])


def _cause(run: Run) -> dict:
    """What started a run, for its audit rows."""
    return _cause_of(run.request_id, run.event_id)


def _cause_of(request_id, event_id) -> dict:
    return {"request_id": str(request_id)} if request_id else {"event_id": f"evt_{event_id}"}


# --- What steps see -----------------------------------------------------------------------------


class Engine:
    """What step executors may ask of the engine."""

    @staticmethod
    def sandboxed(run: Run) -> bool:
        return run.workflow_version.workflow.sandbox or run.product.sandbox

    @staticmethod
    def rows_needed(run: Run) -> bool:
        """A database event's rows are read only if the workflow refers to `row` or `rows` somewhere."""
        version = run.workflow_version
        return bool(run.event_id and version.rows_from and run.event.op != "delete"
                    and _ROWS.search(str(version.definition["steps"])))

    @staticmethod
    def rows_refresh(run: Run, context: dict) -> None:
        """(Re-)read the event's rows from the customer database; a transient failure is a StepRetry."""
        if not Engine.rows_needed(run):
            return
        from apps.connections.rows import rows_read

        try:
            rows, missing = rows_read(connection=run.workflow_version.connection,
                                      rows_from=run.workflow_version.rows_from, ids=run.event.ids)
        except psycopg.Error as exc:
            raise StepRetry(f"Cannot read the rows from the customer database: {exc}") from exc
        run.state["rows"], run.state["missing_ids"] = rows, missing
        _rows_into(context, run.state)


def _rows_into(context: dict, state: dict) -> None:
    context["rows"], context["missing_ids"] = state["rows"], state["missing_ids"]
    context.pop("row", None)
    if len(context["event"]["ids"]) == 1 and state["rows"]:
        context["row"] = state["rows"][0]  # absent when the row is gone: templates using it say so


def run_context(run: Run) -> dict:
    version = run.workflow_version
    context = {
        "data": run.request.data if run.request_id else {},
        "recipient": run.recipient,
        "workflow": {"key": version.workflow.key, "version": version.version},
        "request_id": str(run.request_id) if run.request_id else None,
        "run_id": run.id,
        "timestamp": run.created_at.isoformat(),
        "steps": run.state.setdefault("steps", {}),
    }
    if run.event_id:
        context["event"] = event_summary(run.event)
        if "rows" in run.state:
            _rows_into(context, run.state)
    if "batch" in run.state:
        context["batch"] = run.state["batch"]
    return context


# --- Executing ----------------------------------------------------------------------------------


def _ours(run: Run):
    """The run, if this worker's claim on it still holds (running, with the claim it took)."""
    return Run.objects.filter(id=run.id, status=RunStatus.RUNNING, claim=run.claim)


def _advance(run: Run, fields: dict) -> None:
    """Write the run's new position and state, if it is still ours."""
    if not _ours(run).update(state=run.state, updated_at=timezone.now(), **fields):
        raise ClaimLost()


def run_execute(*, run_id: int) -> str | None:
    """Execute a queued run from its next instruction until it ends or waits; return its status then.

    1. Claim the run: queued -> running, with a lease (a conditional update: one worker wins).
    2. Each step commits in its own transaction together with the new position (see the module).
    3. Mark the run completed, waiting, or failed (escalated), each with its audit row.
    """
    claimed = Run.objects.filter(id=run_id, status=RunStatus.QUEUED).update(
        status=RunStatus.RUNNING, lease_until=_lease(), claim=F("claim") + 1, updated_at=timezone.now())
    if not claimed:
        return None
    return _execute(_runs_load([run_id])[0])


def _runs_load(run_ids) -> list[Run]:
    """The runs with what their steps need. The few versions and products a batch shares are loaded once
    and shared by its runs (a join would build and parse them again for every run)."""
    from apps.tenants.models import Product
    from apps.workflows.models import WorkflowVersion

    runs = list(Run.objects.select_related("request", "event").filter(id__in=run_ids).order_by("id"))
    versions = WorkflowVersion.objects.select_related("workflow").in_bulk({r.workflow_version_id for r in runs})
    products = Product.objects.in_bulk({r.product_id for r in runs})
    for run in runs:
        run.workflow_version, run.product = versions[run.workflow_version_id], products[run.product_id]
    return runs


def _execute(run: Run) -> str | None:
    """The step loop of a claimed (running) run."""
    program = program_for(run.workflow_version)
    context = run_context(run)
    pc = run.step_index
    try:
        if run.event_id and "rows" not in run.state and Engine.rows_needed(run):
            Engine.rows_refresh(run, context)  # when the run starts; saved with its first step
        while pc < len(program):
            instruction = program[pc]
            if instruction.op == "jump":
                pc = instruction.to
                continue
            step = instruction.step
            with transaction.atomic():
                if instruction.op == "branch":
                    taken, target = instruction.choose(context)
                    outcome = StepOutcome(output={"branch": "otherwise" if taken is None else taken})
                else:
                    outcome = STEP_EXECUTORS[step["type"]](run=run, step=step, context=context, engine=Engine)
                    target = pc + 1
                if outcome.finished:
                    RunStep.objects.create(run=run, step_id=step["id"], index=pc, type=step["type"],
                                           status=StepStatus.COMPLETED, output=outcome.output)
                    run.state["steps"][step["id"]] = outcome.output
                    run.state.get("attempts", {}).pop(step["id"], None)
                else:
                    target = pc
                if outcome.end_run:
                    _advance(run, {"step_index": target, "status": RunStatus.COMPLETED,
                                   "completed_at": timezone.now(), "lease_until": None})
                    audit_record(action="run.completed", target_type="run", target_id=run.id,
                                 product_id=run.product_id, organization_id=run.organization_id,
                                 data={**_cause(run), "ended_at": step["id"], **outcome.output})
                    return RunStatus.COMPLETED
                if outcome.waiting_on:
                    _advance(run, {"step_index": target, "status": RunStatus.WAITING, "lease_until": None,
                                   "waiting_on": outcome.waiting_on, "resume_at": outcome.resume_at})
                    return RunStatus.WAITING
                _advance(run, {"step_index": target, "lease_until": _lease()})
            pc = target
    except StepFailed as exc:
        _fail(run, pc, str(exc), step_failed=True)
        return RunStatus.FAILED
    except StepRetry as exc:
        return _retry_or_fail(run, pc, str(exc))
    except ClaimLost:
        logger.warning("Run %s was taken over by another worker; stopping.", run.id)
        return None
    except (OperationalError, InterfaceError):
        raise  # the service database is away: the lease expires and the reconciler runs the step again
    except Exception as exc:  # a step that cannot work (bad data, a bug): fail once, never loop
        logger.exception("Run %s failed at instruction %s", run.id, pc)
        _fail(run, pc, f"Internal error: {exc.__class__.__name__}: {exc}", step_failed=True)
        return RunStatus.FAILED
    with transaction.atomic():
        done = _ours(run).update(
            status=RunStatus.COMPLETED, completed_at=timezone.now(), lease_until=None, step_index=pc,
            state=run.state)
        if done:
            audit_record(action="run.completed", target_type="run", target_id=run.id, product_id=run.product_id,
                         organization_id=run.organization_id, data=_cause(run))
    return RunStatus.COMPLETED


def _step_at(run: Run, pc: int) -> dict:
    program = program_for(run.workflow_version)
    return program[pc].step if pc < len(program) else {"id": "", "type": ""}


def _retry_or_fail(run: Run, pc: int, message: str) -> str:
    step = _step_at(run, pc)
    attempts = run.state.setdefault("attempts", {})
    attempts[step["id"]] = attempts.get(step["id"], 0) + 1
    policy = run.workflow_version.definition.get("retry", {})
    if attempts[step["id"]] >= policy.get("max_attempts", settings.ROWBELL_DELIVERY_MAX_ATTEMPTS):
        _fail(run, pc, f"{message} (gave up after {attempts[step['id']]} attempts)", step_failed=True)
        return RunStatus.FAILED
    delay = retry_delay(attempts[step["id"]], base=policy.get("backoff"), cap=policy.get("max_backoff"))
    resume_at = timezone.now() + timedelta(seconds=delay)
    with transaction.atomic():
        updated = _ours(run).update(
            status=RunStatus.WAITING, waiting_on=WaitingOn.RETRY, resume_at=resume_at, lease_until=None,
            step_index=pc, state=run.state, updated_at=timezone.now())
        if updated:
            audit_record(action="run.retry_scheduled", target_type="run", target_id=run.id,
                         product_id=run.product_id, organization_id=run.organization_id,
                         data={"step": step["id"], "attempt": attempts[step["id"]], "error": message[:500],
                               "resume_at": resume_at.isoformat()})
    return RunStatus.WAITING


def _fail(run: Run, pc: int, message: str, *, step_failed: bool, from_status=RunStatus.RUNNING) -> bool:
    """Mark the run failed at instruction `pc`, record the failed step, audit and escalate it."""
    step = _step_at(run, pc)
    run.state["failed_at"] = pc
    with transaction.atomic():
        runs = _ours(run) if from_status == RunStatus.RUNNING else Run.objects.filter(id=run.id, status=from_status)
        updated = runs.update(
            status=RunStatus.FAILED, error=message[:2000], completed_at=timezone.now(), lease_until=None,
            waiting_on=WaitingOn.NOTHING, resume_at=None, state=run.state, updated_at=timezone.now())
        if not updated:
            return False
        if step_failed:
            RunStep.objects.create(run=run, step_id=step["id"], index=pc, type=step["type"],
                                   status=StepStatus.FAILED, error=message[:2000])
        else:  # the step ran; what it started (a delivery) failed afterwards
            RunStep.objects.filter(run=run, step_id=step["id"]).update(status=StepStatus.FAILED, error=message[:2000])
        audit_record(action="run.failed", target_type="run", target_id=run.id, product_id=run.product_id,
                     organization_id=run.organization_id,
                     data={**_cause(run), "step": step["id"], "error": message[:500]})
        Escalation.objects.create(run=run, product_id=run.product_id, error=message[:2000])
    return True


def runs_execute(*, run_ids: list[int]) -> None:
    """Execute a batch of queued runs, most of it in bulk.

    1. Lock the batch's queued runs (FOR UPDATE SKIP LOCKED: runs another worker holds are skipped).
    2. The common case, runs whose next steps are branches and notify steps: evaluated in memory and
       written, in the same transaction, straight from queued to where they stop (deliveries, steps,
       the runs' new positions), without a separate claim.
    3. The others (a wait, a batch step, rows to read first) and the runs that failed are claimed in
       that transaction (queued -> running, with a lease) and go through the step loop one by one.
    4. The new deliveries are sent at once from this task, concurrently; their hints are only a fallback
       (the dispatcher re-sends those a dead worker left behind).
    """
    from django.db import connection

    if not run_ids:
        return
    writes = _Writes()
    slow, failures, memo = [], [], {}
    slice_ = ProductSlices()
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SELECT id FROM runs_run WHERE id = ANY(%s) AND status = 'queued' ORDER BY id "
                           "FOR UPDATE SKIP LOCKED", [list(run_ids)])
            locked = [r[0] for r in cursor.fetchall()]
        if not locked:
            return
        for run in _runs_load(locked):
            if slice_.spent(run):
                slice_.defer(run)  # left queued, untouched; sent again after commit
                continue
            mark, state, start = writes.mark(), copy.deepcopy(run.state), run.step_index
            with slice_.timing(run):
                try:
                    if not _fast(run, writes, memo):
                        slow.append(run)
                    continue
                except StepFailed as exc:
                    message = str(exc)
                except Exception as exc:  # a bug or bad data in one run must not stop the batch
                    logger.exception("Run %s failed", run.id)
                    message = f"Internal error: {exc.__class__.__name__}: {exc}"
            # Nothing of a failed run is written with the batch; it fails at the step that failed.
            failed_at = run.step_index
            writes.undo(mark)
            run.state, run.step_index = state, start
            failures.append((run, failed_at, message))
        claim = [r.id for r in slow] + [r.id for r, _, _ in failures]
        if claim:
            now = timezone.now()
            Run.objects.filter(id__in=claim).update(status=RunStatus.RUNNING, lease_until=_lease(),
                                                    claim=F("claim") + 1, updated_at=now)
            for run in [*slow, *(r for r, _, _ in failures)]:
                run.status, run.claim = RunStatus.RUNNING, run.claim + 1
        writes.flush()
    # Sent first: these deliveries are leased to this task, and what follows may take a while.
    try:
        if writes.to_send:
            from apps.deliveries.services import deliveries_send_claimed

            deliveries_send_claimed(writes.to_send)
    finally:
        for run, pc, message in failures:
            _fail(run, pc, message, step_failed=True)
    for run in slow:
        if slice_.spent(run):
            # Claimed in the batch's transaction, not yet started: given back as it was.
            if Run.objects.filter(id=run.id, status=RunStatus.RUNNING, claim=run.claim).update(
                    status=RunStatus.QUEUED, lease_until=None, updated_at=timezone.now()):
                slice_.defer(run)
            continue
        with slice_.timing(run):
            _execute(run)
    slice_.requeue()


class ProductSlices:
    """How long one task has worked for each product, so that no product holds a worker for long.

    A batch works for each product for at most ROWBELL_PRODUCT_SLICE_SECONDS (seconds of wall-clock time:
    rendering, evaluating, writing), then leaves that product's remaining runs queued and sends them
    again on the `low` queue, behind every other product's waiting work. One product's slow templates
    (each render is itself bounded by ROWBELL_TEMPLATE_RENDER_SECONDS) then delay another product's
    deliveries by about one slice, not by the whole batch. Used by a batch (runs_execute) and by a
    request's own task for its first runs (request_start).
    """

    def __init__(self):
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


class _Writes:
    """What a batch of runs writes, gathered in memory and written in a few statements."""

    def __init__(self):
        from apps.deliveries.models import Delivery

        self.Delivery = Delivery
        self.deliveries, self.steps, self.runs, self.audits, self.to_send = [], [], [], [], []

    def mark(self) -> tuple:
        return len(self.deliveries), len(self.steps), len(self.runs), len(self.audits)

    def undo(self, mark: tuple) -> None:
        """Drop what was staged after `mark` (a run that failed half-way through the batch)."""
        del self.deliveries[mark[0]:], self.steps[mark[1]:], self.runs[mark[2]:], self.audits[mark[3]:]

    def step(self, run: Run, pc: int, step: dict, output: dict) -> None:
        self.steps.append(RunStep(run=run, step_id=step["id"], index=pc, type=step["type"],
                                  status=StepStatus.COMPLETED, output=output))
        run.state["steps"][step["id"]] = output

    def flush(self) -> None:
        from apps.core.bulk import insert_rows

        now = timezone.now()
        if self.deliveries:
            # Deliveries to send now are written claimed (sending, first attempt counted, leased): this
            # task sends them after commit. If it dies first, the lease expires and the reconciler
            # queues them again.
            lease = _lease()
            for d in self.deliveries:
                d.created_at = d.updated_at = now
                if d.status == "queued":
                    d.status, d.attempt_count, d.lease_until = "sending", 1, lease
            fields = [f.attname for f in self.Delivery._meta.concrete_fields if not f.primary_key]
            ids = dict((m, pk) for pk, m in insert_rows(
                self.Delivery, [{f: getattr(d, f) for f in fields} for d in self.deliveries],
                returning=("id", "message_id")))
            for d in self.deliveries:
                d.id = ids[d.message_id]
            self.to_send = [d for d in self.deliveries if d.status == "sending"]
            from apps.deliveries.services import status_events_record

            status_events_record([(d.id, d.status) + (({"reason": d.last_error},) if d.last_error else ())
                                  for d in self.deliveries], at=now)
        if self.steps:
            insert_rows(RunStep, [{"run_id": st.run_id, "step_id": st.step_id, "index": st.index, "type": st.type,
                                   "status": st.status, "output": st.output, "error": "", "finished_at": now}
                                  for st in self.steps])
        if self.runs:
            from django.db import connection

            rows = [{"id": r.id, "status": r.status, "waiting_on": r.waiting_on, "step_index": r.step_index,
                     "state": r.state, "completed_at": r.completed_at} for r in self.runs]
            with connection.cursor() as cursor:
                cursor.execute(_RUNS_UPDATE, [now, exactjson.dumps(rows)])
        audit_record_many(self.audits)


# The new positions of a batch of runs, in one statement (Django's bulk_update builds a CASE per column).
# The runs are locked by the caller's transaction, still queued.
_RUNS_UPDATE = """
UPDATE runs_run r
SET status = v.status, waiting_on = v.waiting_on, step_index = v.step_index, state = v.state,
    completed_at = v.completed_at, lease_until = NULL, updated_at = %s
FROM jsonb_to_recordset(%s::jsonb)
     AS v(id bigint, status text, waiting_on text, step_index int, state jsonb, completed_at timestamptz)
WHERE r.id = v.id AND r.status = 'queued'
"""


def _fast(run: Run, writes: _Writes, memo: dict) -> bool:
    """Move a run through branches and notify steps up to its first delivery that must be sent (or to
    its end), recording it in `writes`. Return False, having changed nothing, if the way ahead holds
    another kind of step (or rows must be read first): the step loop takes the run."""
    from apps.deliveries.models import DeliveryStatus
    from apps.deliveries.services import delivery_build

    if run.event_id and "rows" not in run.state and Engine.rows_needed(run):
        return False
    program = program_for(run.workflow_version)
    context = run_context(run)
    # First the way ahead, without writing: branches are decided on the data as it is.
    pc, path = run.step_index, []
    while True:
        while pc < len(program) and program[pc].op == "jump":
            pc = program[pc].to
        if pc >= len(program):
            break
        instruction = program[pc]
        if instruction.op == "branch":
            taken, next_pc = instruction.choose(context)
            path.append((pc, instruction, taken))
            pc = next_pc
            continue
        if instruction.step["type"] != "notify":
            return False
        path.append((pc, instruction, None))
        pc += 1
    options = notify_delivery_options(run, Engine)
    for pc, instruction, taken in path:
        step = instruction.step
        if instruction.op == "branch":
            writes.step(run, pc, step, {"branch": "otherwise" if taken is None else taken})
            continue
        run.step_index = pc  # where it fails, if its templates cannot render
        rendered = notify_render(run=run, step=step, context=context, memo=memo)
        delivery, audit = delivery_build(run=run, step_id=step["id"], channel=step["channel"], rendered=rendered,
                                         **options)
        writes.deliveries.append(delivery)
        if audit is not None:
            writes.audits.append(audit)
        writes.step(run, pc, step, {"delivery": delivery.message_id, "status": delivery.status})
        if delivery.status in (DeliveryStatus.QUEUED, DeliveryStatus.HELD):
            run.status, run.waiting_on, run.step_index, run.lease_until = (
                RunStatus.WAITING, WaitingOn.DELIVERY, pc + 1, None)
            writes.runs.append(run)
            return True
    run.status, run.step_index, run.lease_until, run.completed_at = (
        RunStatus.COMPLETED, len(program), None, timezone.now())
    writes.runs.append(run)
    writes.audits.append(AuditEntry(action="run.completed", target_type="run", target_id=run.id,
                                    product_id=run.product_id, organization_id=run.organization_id, data=_cause(run)))
    return True


# --- Resuming -----------------------------------------------------------------------------------


def runs_resume_due(*, limit: int = RESUME_LIMIT) -> int:
    """Queue the waiting runs whose time has come (waits, condition checks, retries, batch windows).

    Claimed under SKIP LOCKED with a conditional update in one transaction, so two ticks never resume
    the same run; the hints go out after commit (a lost one is re-sent by the reconciler)."""
    now = timezone.now()
    with transaction.atomic():
        due = list(Run.objects.select_for_update(skip_locked=True)
                   .filter(status=RunStatus.WAITING, resume_at__lte=now).exclude(waiting_on=WaitingOn.DELIVERY)
                   .order_by("resume_at").values_list("id", "priority")[:limit])
        if not due:
            return 0
        Run.objects.filter(id__in=[i for i, _ in due], status=RunStatus.WAITING).update(
            status=RunStatus.QUEUED, waiting_on=WaitingOn.NOTHING, resume_at=None, enqueued_at=now, updated_at=now)
        by_priority: dict[str, list[int]] = {}
        for run_id, priority in due:
            by_priority.setdefault(priority, []).append(run_id)
        for p, ids in by_priority.items():
            runs_enqueue_on_commit(ids, p)
    return len(due)


def runs_deliveries_settled(settled: list[tuple]) -> None:
    """Runs waiting for these deliveries move on: (run id, step id, sent or not, why not). Called inside
    the transaction that finalized the deliveries, so a delivery is final if and only if its run moved on.
    A delivery of another step than the one a run waits on (a replay of an earlier one) moves nothing."""
    outcomes = {run_id: (step_id, ok, message) for run_id, step_id, ok, message in settled}
    rows = list(Run.objects.select_for_update().filter(
        id__in=outcomes, status=RunStatus.WAITING, waiting_on=WaitingOn.DELIVERY).values_list(
        "id", "workflow_version_id", "step_index", "priority", "product_id", "organization_id", "request_id",
        "event_id"))
    programs = programs_by_version({r[1] for r in rows})
    now = timezone.now()
    done, go_on, audits, failed = [], {}, [], []
    for run_id, version_id, step_index, priority, product_id, organization_id, request_id, event_id in rows:
        step_id, ok, message = outcomes[run_id]
        program = programs[version_id]
        if step_id and not (0 < step_index <= len(program) and program[step_index - 1].step.get("id") == step_id):
            continue
        if not ok:
            failed.append((run_id, message))
        elif _past_end(programs[version_id], step_index):
            done.append(run_id)
            audits.append(AuditEntry(action="run.completed", target_type="run", target_id=run_id,
                                     product_id=product_id, organization_id=organization_id,
                                     data=_cause_of(request_id, event_id)))
        else:
            go_on.setdefault(priority, []).append(run_id)
    if done:  # the delivery was the last step: the run is complete without another trip through a worker
        Run.objects.filter(id__in=done).update(status=RunStatus.COMPLETED, completed_at=now, waiting_on="",
                                               updated_at=now)
    for priority, ids in go_on.items():
        Run.objects.filter(id__in=ids).update(status=RunStatus.QUEUED, waiting_on="", enqueued_at=now, updated_at=now)
        runs_enqueue_on_commit(ids, priority)
    audit_record_many(audits)
    for run in Run.objects.filter(id__in=[r for r, _ in failed]).select_related("workflow_version"):
        _fail(run, run.step_index - 1, dict(failed)[run.id], step_failed=False, from_status=RunStatus.WAITING)


def _past_end(program, pc: int) -> bool:
    """Whether nothing but jumps is left from `pc` (a notify step that ends a branch ends the run)."""
    while pc < len(program) and program[pc].op == "jump":
        pc = program[pc].to
    return pc >= len(program)


# --- Operators' actions -------------------------------------------------------------------------


class RunActionRefused(Conflict):
    """The run is not in a state this action applies to (409)."""


def _cancel(runs, *, actor: str, reason: str) -> list[int]:
    """Cancel the queued and waiting runs among `runs` (a queryset); return their ids. Their held or
    queued deliveries are discarded; a batch one was collecting is closed (the runs that joined it ended
    there). Each cancelled run gets an audit row naming the actor."""
    from apps.deliveries.models import Delivery, DeliveryStatus

    from .models import Batch, BatchStatus

    now = timezone.now()
    pending = (DeliveryStatus.QUEUED, DeliveryStatus.HELD)
    with transaction.atomic():
        rows = list(runs.select_for_update().filter(status__in=(RunStatus.QUEUED, RunStatus.WAITING))
                    .values_list("id", "product_id", "organization_id", "request_id", "event_id"))
        ids = [r[0] for r in rows]
        Run.objects.filter(id__in=ids).update(status=RunStatus.CANCELLED, completed_at=now, waiting_on="",
                                              resume_at=None, lease_until=None, updated_at=now)
        discarded: dict[int, list[str]] = {}
        delivery_ids = []
        for delivery_id, run_id, message_id in Delivery.objects.filter(run_id__in=ids, status__in=pending).values_list(
                "id", "run_id", "message_id"):
            discarded.setdefault(run_id, []).append(message_id)
            delivery_ids.append(delivery_id)
        Delivery.objects.filter(id__in=delivery_ids).update(
            status=DeliveryStatus.DISCARDED, completed_at=now, last_error="The run was cancelled.", updated_at=now)
        from apps.deliveries.services import status_events_record

        status_events_record([(i, DeliveryStatus.DISCARDED, {"reason": "run cancelled", "by": actor})
                              for i in delivery_ids], at=now, source="operator")
        Batch.objects.filter(owner_id__in=ids, status=BatchStatus.OPEN).update(status=BatchStatus.CLOSED)
        audit_record_many([AuditEntry(action="run.cancelled", target_type="run", target_id=run_id,
                                      product_id=product_id, organization_id=organization_id, actor=actor,
                                      data={**_cause_of(request_id, event_id), "reason": reason,
                                            "discarded_deliveries": discarded.get(run_id, [])})
                           for run_id, product_id, organization_id, request_id, event_id in rows])
    return ids


def run_cancel(*, run: Run, actor: str) -> Run:
    """Cancel a queued or waiting run (see _cancel); anything else is refused."""
    if not _cancel(Run.objects.filter(id=run.id), actor=actor, reason="cancelled"):
        run.refresh_from_db()
        raise RunActionRefused(f"Only a queued or waiting run can be cancelled; this one is {run.status}.")
    run.refresh_from_db()
    return run


def runs_cancel_for_workflow(*, workflow, actor: str) -> int:
    """Cancel every queued or waiting run of a workflow (all versions)."""
    return len(_cancel(Run.objects.filter(workflow_version__workflow=workflow), actor=actor,
                       reason="workflow unpublished"))


def run_rerun(*, run: Run, from_start: bool, actor: str) -> Run:
    """Run a failed (or cancelled) run again as a new run linked to it: from the start, or from the step
    that failed with what the steps before it produced."""
    if run.status not in (RunStatus.FAILED, RunStatus.CANCELLED):
        raise RunActionRefused(f"Only a failed or cancelled run can be re-run; this one is {run.status}.")
    if not from_start and "failed_at" not in run.state:
        raise RunActionRefused("This run did not fail at a step: re-run it from the start.")
    state, step_index = {}, 0
    if not from_start:
        step_index = run.state["failed_at"]
        step_id = _step_at(run, step_index)["id"]
        state = {k: v for k, v in run.state.items() if k not in ("failed_at", "attempts")}
        state["steps"] = {k: v for k, v in run.state.get("steps", {}).items() if k != step_id}
        state.get("deadlines", {}).pop(step_id, None)
        state.get("batch_owned", {}).pop(step_id, None)
    now = timezone.now()
    with transaction.atomic():
        # One re-run at a time: a second call (a double click, API and admin together) is refused while
        # the first one has not ended.
        Run.objects.select_for_update().filter(id=run.id).first()
        pending = Run.objects.filter(rerun_of=run).exclude(
            status__in=(RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED)).values_list("id", flat=True).first()
        if pending:
            raise RunActionRefused(f"Run {pending}, a re-run of this one, has not ended yet.")
        new = Run.objects.create(
            request_id=run.request_id, event_id=run.event_id, recipient_index=run.recipient_index,
            product_id=run.product_id, organization_id=run.organization_id, workflow_version_id=run.workflow_version_id,
            recipient=run.recipient, priority=run.priority, state=state, step_index=step_index, rerun_of=run,
            enqueued_at=now)
        # The failure is decided: it no longer waits on the dashboard.
        Escalation.objects.filter(run_id=run.id, decided_at__isnull=True).update(
            decision=EscalationDecision.RERUN, decided_at=now, decided_by=actor)
        audit_record(action="run.rerun", target_type="run", target_id=new.id, product_id=run.product_id,
                     organization_id=run.organization_id, actor=actor,
                     data={"rerun_of": run.id, "from": "start" if from_start else "failed step",
                           "step_index": step_index})
        runs_enqueue_on_commit([new.id], run.priority)
    return new


def run_dismiss(*, run: Run, actor: str) -> Run:
    """Decide that a failed run needs nothing more (no re-run): it stops waiting for a decision on the
    dashboard. Anything but a failed run waiting for a decision is refused."""
    with transaction.atomic():
        decided = Escalation.objects.filter(run_id=run.id, decided_at__isnull=True).update(
            decision=EscalationDecision.DISMISSED, decided_at=timezone.now(), decided_by=actor)
        if not decided:
            raise RunActionRefused("Only a failed run waiting for a decision can be dismissed.")
        audit_record(action="run.dismissed", target_type="run", target_id=run.id, product_id=run.product_id,
                     organization_id=run.organization_id, actor=actor)
    return run
