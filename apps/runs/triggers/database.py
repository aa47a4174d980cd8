"""`database`: runs started by row changes in a customer database.

A database trigger's `for_each` says how many: `row` (the default) starts one run per affected row, and
`statement` one per recorded event (a statement's rows of one capture). A run's cause is its event
(`cause_id` is the event's id) and, per row, the row's position in the event's keys (`recipient_index`):
the unique (workflow version, source, cause, index) of runs makes each (version, event, row) run once.

Templates see the `event` (`{"id": "evt_N", "type", "table", "ids", "occurred_at"}`; a per-row run's
`ids` holds its own row's key only) and, when the workflow refers to them, rows read by key from the
customer database when the run starts, read again each time a wait re-checks its condition:
- per row: `row`. A deleted row cannot be read: its `row` holds its key columns only.
- per statement: `rows`, `row` for a one-row event, `missing_ids`.

Launch (`runs_for_events`, an event consumer of pick-up, apps.connections.consumers) writes the runs
queued in the pick-up's transaction, in bulk, and hints workers once it commits (apps.runs.engine.runs_execute).
"""

from __future__ import annotations

import logging
import re
from collections import defaultdict

import psycopg
from django.db.models import F
from django.utils import timezone

from apps.audit.services import AuditEntry, audit_record_many
from apps.connections.models import Event
from apps.connections.rows import rows_read, rows_read_indexed
from apps.connections.sources import NOT_RUN
from apps.core import exactjson
from apps.core.bulk import insert_rows
from apps.workflows.models import WorkflowVersion
from apps.workflows.row_links import (
    link_value,
    links_problem,
    organizations_route,
    recipient_from,
    related_read,
    trigger_links,
)

from ..engine import runs_enqueue_on_commit
from ..models import Priority, Run, RunStatus
from ..selectors import event_summary
from ..steps import StepFailed, StepRetry
from .base import TriggerSource, trigger_source_register

logger = logging.getLogger(__name__)

_ROWS = re.compile(r"\brows?\b")
_REFERS_TO_ROWS: dict[int, bool] = {}


def _refers_to_rows(version) -> bool:
    """Whether the version's steps refer to `row` or `rows` anywhere (versions are immutable: once each)."""
    found = _REFERS_TO_ROWS.get(version.id)
    if found is None:
        if len(_REFERS_TO_ROWS) > 10_000:
            _REFERS_TO_ROWS.clear()
        found = _REFERS_TO_ROWS[version.id] = bool(_ROWS.search(str(version.definition["steps"])))
    return found


def for_each(version) -> str:
    """A database-triggered version's `for_each`: "row" or "statement". Every definition saved since
    `for_each` exists states it; one without it was saved before, when every run was per statement
    (migration workflows 0004 writes it down; this covers code that runs before that migration)."""
    return version.definition["trigger"].get("for_each", "statement")


def _per_row(run: Run) -> bool:
    return for_each(run.workflow_version) == "row"


def _run_ids(run: Run) -> list:
    """The keys a run is about: its own row's, per row; the event's, per statement; a backfill's row's."""
    if run.event_id is None:  # a backfill (apps.runs.triggers.backfill): the row's key is in its state
        return [run.state["backfill_key"]]
    ids = run.event.ids
    if _per_row(run):
        return ids[run.recipient_index : run.recipient_index + 1]
    return ids


def _key_row(run: Run) -> dict:
    """A per-row run's row as far as it is known without reading it: its key columns."""
    version = run.workflow_version
    key = (version.rows_from or {}).get("key") or []
    ids = _run_ids(run)
    if not key or not ids:
        return {}
    value = ids[0]
    return dict(zip(key, value if len(key) > 1 and isinstance(value, list) else [value]))


def run_event_summary(run: Run) -> dict:
    """The event of a database-triggered run as its templates and the API show it (event_summary), with
    the keys the run is about: its own row's, per row. `run.event` and `run.workflow_version` are read. A
    backfill's run has no event: {"id": None, "type": "backfill", "table", "ids": [its row's key],
    "occurred_at": when the backfill started it}."""
    if run.event_id is None:
        return {
            "id": None,
            "type": "backfill",
            "table": (run.workflow_version.rows_from or {}).get("table", ""),
            "ids": _run_ids(run),
            "occurred_at": run.created_at.isoformat() if run.created_at else None,
        }
    return event_summary(run.event, ids=_run_ids(run))


def _op(run: Run) -> str:
    return run.event.op if run.event_id is not None else "update"


def _links(version) -> dict:
    return trigger_links(version.definition["trigger"])


def _related_read(runs: list[Run]) -> None:
    """Read the related rows of per-row runs whose own row is in their state: state["related"] = {name: row,
    or None}. One query per version and related table. Raises psycopg.Error when the customer database
    cannot be read."""
    by_version: dict[int, list[Run]] = defaultdict(list)
    for run in runs:
        if _links(run.workflow_version).get("related"):
            by_version[run.workflow_version_id].append(run)
    for group in by_version.values():
        version = group[0].workflow_version
        found = related_read(
            connection=version.connection,
            trigger=version.definition["trigger"],
            rows=[run.state["rows"][0] if run.state.get("rows") else None for run in group],
        )
        for run, related in zip(group, found):
            run.state["related"] = related


def _recipient_resolve(run: Run) -> None:
    """Set a per-row run's recipient from its trigger's mapping and what its state holds (its row, its
    related rows): apps.workflows.row_links.recipient_from. Links that cannot be trusted (links_problem: the
    row is gone, a mapped column too, a reference names no row) are recorded in the state instead: the run
    fails at its first step, escalated."""
    trigger = run.workflow_version.definition["trigger"]
    if run.recipient and run.step_index > 0:
        # Read again later (a condition checked while the run waits): who the run is for was settled when it
        # started; a row deleted or changed since is the condition's business, not a reason to fail the run.
        return
    row = run.state["rows"][0] if run.state.get("rows") else None
    related = run.state.get("related") or {}
    problem = links_problem(trigger, row=row, related=related, key=_run_ids(run)[0] if _run_ids(run) else None)
    if problem:
        run.state["links_error"] = problem
        return
    recipient = recipient_from(trigger, row=row, related=related)
    if recipient is None:
        return
    run.recipient = recipient
    run.__dict__["cause_resolved"] = True  # written with the run (apps.runs.engine.Writes)


def _organizations_resolve(runs: list[Run]) -> None:
    """Route per-row runs whose trigger names an `organization` column to the product's organization with that
    external id (apps.workflows.row_links.organizations_route, one query per product): the run then
    belongs to it (its providers, sandbox, audit scope, its key). A row whose value is null or matches no
    organization is recorded in the run's state as an error: the run fails at its first step, escalated."""
    by_product: dict = defaultdict(list)
    for run in runs:
        path = _links(run.workflow_version).get("organization")
        if not path or "organization" in run.state or run.state.get("links_error"):
            continue
        row = run.state["rows"][0] if run.state.get("rows") else None
        by_product[run.product_id].append(
            (run, path, link_value(path, row=row, related=run.state.get("related") or {}))
        )
    for product_id, items in by_product.items():
        routed = organizations_route(product_id=product_id, items=[(path, value) for _, path, value in items])
        for (run, _, _), (organization, error) in zip(items, routed, strict=True):
            if organization is not None:
                run.organization_id = organization.id
                run._state.fields_cache["organization"] = organization
                run.state["organization"] = {"external_id": organization.external_id}
                run.__dict__["cause_resolved"] = True  # written with the run (apps.runs.engine.Writes)
            else:
                run.state["organization"] = {"error": error}


def _rows_into(run: Run, context: dict, state: dict) -> None:
    context.pop("row", None)
    if _per_row(run):
        if state["rows"]:
            context["row"] = state["rows"][0]  # absent when the row is gone: templates using it say so
        for name, row in (state.get("related") or {}).items():
            context.pop(name, None)
            if row is not None:
                context[name] = row  # absent when there is none: templates using it say so
        context["recipient"] = run.recipient
        return
    context["rows"], context["missing_ids"] = state["rows"], state["missing_ids"]
    if len(context["event"]["ids"]) == 1 and state["rows"]:
        context["row"] = state["rows"][0]  # absent when the row is gone: templates using it say so


class DatabaseTrigger(TriggerSource):
    name = "database"

    def load(self, runs: list[Run]) -> None:
        events = Event.objects.in_bulk({run.event_id for run in runs if run.event_id is not None})
        for run in runs:
            if run.event_id is not None:
                run.event = events[run.event_id]

    def context(self, run: Run, context: dict) -> None:
        unrouted = run.state.get("links_error") or (run.state.get("organization") or {}).get("error")
        if unrouted:
            raise StepFailed(unrouted)
        context["event"] = run_event_summary(run)
        if "rows" in run.state:
            _rows_into(run, context, run.state)
        elif _per_row(run) and _op(run) == "delete":
            context["row"] = _key_row(run)

    def cause(self, cause_id: str) -> dict:
        return {"event_id": f"evt_{cause_id}"}

    @staticmethod
    def _rows_needed(run: Run) -> bool:
        """A database event's rows are read only if the workflow refers to `row` or `rows` somewhere."""
        version = run.workflow_version
        return bool(version.rows_from and _op(run) != "delete" and (_refers_to_rows(version) or _links(version)))

    def prepare_needed(self, run: Run) -> bool:
        if not self._rows_needed(run):
            return False
        # Its rows, and its related rows when the trigger reads some: a run never goes on with half of them.
        return "rows" not in run.state or (
            _per_row(run) and bool(_links(run.workflow_version).get("related")) and "related" not in run.state
        )

    def prepare(self, run: Run, context: dict) -> None:
        self.refresh(run, context)

    def prepare_many(self, runs: list[Run]) -> None:
        """Per-row runs' rows, one query per connection and table for the whole batch (rows_read_indexed).
        Per-statement runs, and runs whose rows cannot be read now, are left to `prepare`. Never raises:
        a run it cannot prepare is left as it was (see TriggerSource.prepare_many)."""
        try:
            self._prepare_many(runs)
        except Exception:  # a defect here must not lose the batch: each run reads its own in `prepare`
            logger.exception("Preparing %d runs together failed; each run reads its own.", len(runs))
            for run in runs:
                for key in ("rows", "missing_ids", "related", "organization", "links_error"):
                    run.state.pop(key, None)

    def _prepare_many(self, runs: list[Run]) -> None:
        groups: dict[tuple, list[Run]] = defaultdict(list)
        for run in runs:
            if _per_row(run) and self._rows_needed(run):
                version = run.workflow_version
                groups[(version.connection_id, exactjson.dumps(version.rows_from, sort_keys=True))].append(run)
        for group in groups.values():
            version = group[0].workflow_version
            keys = [_run_ids(run) for run in group]
            try:
                found = rows_read_indexed(
                    connection=version.connection,
                    rows_from=version.rows_from,
                    ids=[k[0] for k in keys if k],
                )
            except psycopg.Error:
                logger.warning("Rows of %d runs could not be read in one query; each run reads its own.", len(group))
                continue
            index = 0
            for run, key in zip(group, keys):
                if not key:  # a run beyond its event's keys names no row
                    run.state["rows"], run.state["missing_ids"] = [], []
                    continue
                row = found.get(index)
                run.state["rows"], run.state["missing_ids"] = ([row], []) if row is not None else ([], key)
                index += 1
            try:
                _related_read(group)
            except psycopg.Error:
                logger.warning(
                    "Related rows of %d runs could not be read in one query; each run reads its own.", len(group)
                )
                for run in group:
                    run.state.pop("rows", None)
                    run.state.pop("related", None)
                continue
            for run in group:
                _recipient_resolve(run)
            _organizations_resolve(group)

    def refresh(self, run: Run, context: dict) -> None:
        """(Re-)read the event's rows from the customer database; a transient failure is a StepRetry."""
        if not self._rows_needed(run):
            return
        version = run.workflow_version
        try:
            rows, missing = rows_read(connection=version.connection, rows_from=version.rows_from, ids=_run_ids(run))
            related = (
                related_read(
                    connection=version.connection,
                    trigger=version.definition["trigger"],
                    rows=[rows[0] if rows else None],
                )[0]
                if _per_row(run) and _links(version).get("related")
                else None
            )
        except psycopg.errors.DataError as exc:
            # A value the key's type refuses (a text reference to a bigint key holding 'abc'): reading again
            # cannot help. The run fails, escalated, with PostgreSQL's words.
            raise StepFailed(
                f"Cannot read the row or its related rows: {str(exc).strip().splitlines()[0]}. Correct the row, or "
                "the workflow's trigger, then re-run."
            ) from exc
        except psycopg.Error as exc:
            # Nothing is kept of a read that failed half-way: the retry reads the row and its related rows again.
            raise StepRetry(f"Cannot read the rows from the customer database: {exc}") from exc
        run.state["rows"], run.state["missing_ids"] = rows, missing
        if related is not None:
            run.state["related"] = related
        if _per_row(run):
            _recipient_resolve(run)
            _organizations_resolve([run])
            unrouted = run.state.get("links_error") or (run.state.get("organization") or {}).get("error")
            if unrouted:
                raise StepFailed(unrouted)
        _rows_into(run, context, run.state)


DATABASE = trigger_source_register(DatabaseTrigger())


# Runs written per statement at launch: a statement that changed 100,000 rows starts its runs in a few
# statements of this many rows each (one JSON parameter each), never one by one.
LAUNCH_CHUNK = 5_000


def runs_for_events(*, events) -> list[int]:
    """Launch the runs of newly recorded database events: for each (published version, event), one run per
    row of the event (`for_each: row`) or one for the event (`for_each: statement`); return their ids.

    Call inside the transaction that records the events (the poller's): the runs, their audit rows, the
    events and the advanced cursor commit together, and the unique (workflow version, source, cause, index)
    of runs makes a repeat launch nothing. The runs are written in bulk (LAUNCH_CHUNK rows per statement)
    and hinted to workers after commit.
    """
    events = [e for e in events if e.op not in NOT_RUN]
    if not events:
        return []
    versions = list(
        WorkflowVersion.objects.filter(
            connection_id__in={e.connection_id for e in events},
            capture__in={e.capture for e in events},
            workflow__published_version=F("id"),
        ).select_related("workflow")
    )
    if not versions:
        return []
    now = timezone.now().isoformat()
    per_row = {version.id: for_each(version) == "row" for version in versions}
    rows = [
        {
            "source": DATABASE.name,
            "cause_id": str(event.id),
            "event_id": event.id,
            "workflow_version_id": version.id,
            "product_id": version.workflow.product_id,
            "organization_id": None,
            "request_id": None,
            "rerun_of_id": None,
            "recipient_index": index,
            "recipient": {},
            "priority": Priority.NORMAL,
            "status": RunStatus.QUEUED,
            "step_index": 0,
            "state": {},
            "waiting_on": "",
            "error": "",
            "enqueued_at": now,
            "created_at": now,
            "updated_at": now,
        }
        for event in events
        for version in versions
        if version.capture == event.capture and version.connection_id == event.connection_id
        for index in (range(len(event.ids)) if per_row[version.id] else (0,))
    ]
    # ON CONFLICT: the unique (workflow version, source, cause, index) makes a repeat launch nothing.
    launched = [
        row
        for start in range(0, len(rows), LAUNCH_CHUNK)
        for row in insert_rows(
            Run,
            rows[start : start + LAUNCH_CHUNK],
            returning=("id", "event_id", "workflow_version_id", "product_id"),
            on_conflict="ON CONFLICT DO NOTHING",
        )
    ]
    keys = {v.id: (v.workflow.key, v.version) for v in versions}
    audit_record_many(
        [
            AuditEntry(
                action="run.launched",
                target_type="run",
                target_id=run_id,
                product_id=product_id,
                data={"event_id": f"evt_{event_id}", "workflow": keys[version_id][0], "version": keys[version_id][1]},
            )
            for run_id, event_id, version_id, product_id in launched
        ]
    )
    run_ids = [r[0] for r in launched]
    runs_enqueue_on_commit(run_ids, Priority.NORMAL)
    return run_ids
