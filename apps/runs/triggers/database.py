"""`database`: runs started by row changes in a customer database, one per recorded event and published
version that watches its capture.

A run's cause is its event (`cause_id` is the event's id, `event` its key). Templates see the `event`
(`{"id": "evt_N", "type", "table", "ids", "occurred_at"}`) and, when the workflow refers to them, the rows
read by key from the customer database when the run starts (`rows`, `row` for a one-row event,
`missing_ids`), read again each time a wait re-checks its condition.

Launch (`runs_for_events`, an event consumer of pick-up, apps.connections.consumers) writes the runs
queued in the pick-up's transaction and hints workers once it commits (apps.runs.engine.runs_execute).
"""

from __future__ import annotations

import re

import psycopg
from django.db.models import F
from django.utils import timezone

from apps.audit.services import AuditEntry, audit_record_many
from apps.connections.models import Event
from apps.connections.rows import rows_read
from apps.connections.sources import NOT_RUN
from apps.core.bulk import insert_rows
from apps.workflows.models import WorkflowVersion

from ..engine import runs_enqueue_on_commit
from ..models import Priority, Run, RunStatus
from ..selectors import event_summary
from ..steps import StepRetry
from .base import TriggerSource, trigger_source_register

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


def _rows_into(context: dict, state: dict) -> None:
    context["rows"], context["missing_ids"] = state["rows"], state["missing_ids"]
    context.pop("row", None)
    if len(context["event"]["ids"]) == 1 and state["rows"]:
        context["row"] = state["rows"][0]  # absent when the row is gone: templates using it say so


class DatabaseTrigger(TriggerSource):
    name = "database"

    def load(self, runs: list[Run]) -> None:
        events = Event.objects.in_bulk({run.event_id for run in runs})
        for run in runs:
            run.event = events[run.event_id]

    def context(self, run: Run, context: dict) -> None:
        context["event"] = event_summary(run.event)
        if "rows" in run.state:
            _rows_into(context, run.state)

    def cause(self, cause_id: str) -> dict:
        return {"event_id": f"evt_{cause_id}"}

    @staticmethod
    def _rows_needed(run: Run) -> bool:
        """A database event's rows are read only if the workflow refers to `row` or `rows` somewhere."""
        version = run.workflow_version
        return bool(version.rows_from and run.event.op != "delete" and _refers_to_rows(version))

    def prepare_needed(self, run: Run) -> bool:
        return "rows" not in run.state and self._rows_needed(run)

    def prepare(self, run: Run, context: dict) -> None:
        self.refresh(run, context)

    def refresh(self, run: Run, context: dict) -> None:
        """(Re-)read the event's rows from the customer database; a transient failure is a StepRetry."""
        if not self._rows_needed(run):
            return
        try:
            rows, missing = rows_read(
                connection=run.workflow_version.connection, rows_from=run.workflow_version.rows_from, ids=run.event.ids
            )
        except psycopg.Error as exc:
            raise StepRetry(f"Cannot read the rows from the customer database: {exc}") from exc
        run.state["rows"], run.state["missing_ids"] = rows, missing
        _rows_into(context, run.state)


DATABASE = trigger_source_register(DatabaseTrigger())


def runs_for_events(*, events) -> list[int]:
    """Launch the runs of newly recorded database events: one per (published version, event); return
    their ids.

    Call inside the transaction that records the events (the poller's): the runs, their audit rows, the
    events and the advanced cursor commit together, and the unique (workflow version, source, cause) of
    runs makes a repeat launch nothing. The runs are hinted to workers after commit.
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
            "recipient_index": 0,
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
    ]
    # ON CONFLICT: the unique (workflow version, source, cause) makes a repeat launch nothing.
    launched = insert_rows(
        Run,
        rows,
        returning=("id", "event_id", "workflow_version_id", "product_id"),
        on_conflict="ON CONFLICT DO NOTHING",
    )
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
