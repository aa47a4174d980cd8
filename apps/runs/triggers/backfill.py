"""`backfill`: runs a person starts for rows that already exist, as if each had just changed.

A database-triggered workflow (`for_each: row`) runs for the rows of its table that match a predicate, page by
page in key order, at low priority. Each run is one (published version, row): its cause is the row's key, so
the unique (version, source, cause) of runs makes the same backfill twice start nothing new, and a page that
was cut short (a crash, a timeout) is started again from the same `after`. Runs read their row, related rows,
recipient and organization as the database trigger's runs do (apps.runs.triggers.database).
"""

from __future__ import annotations

import hashlib

import psycopg
from django.db import transaction
from django.utils import timezone

from apps.audit.services import AuditEntry, audit_record, audit_record_many
from apps.connections.backfill import backfill_keys
from apps.connections.services import CustomerDatabaseUnavailable
from apps.core import exactjson
from apps.core.bulk import insert_rows
from apps.core.exceptions import InvalidInput
from apps.workflows.services import workflow_preview, workflow_preview_outcome, workflow_preview_sample

from ..engine import runs_enqueue_on_commit
from ..models import Priority, Run, RunStatus
from .base import trigger_source_register
from .database import DatabaseTrigger

# Rows one call starts runs for, by default and at most.
BACKFILL_LIMIT = 1_000
BACKFILL_MAX = 10_000
# Rows of a dry run rendered as examples.
EXAMPLES = 3


class BackfillTrigger(DatabaseTrigger):
    name = "backfill"
    definition_type = "database"

    def cause(self, cause_id: str) -> dict:
        return {"backfill": cause_id}


BACKFILL = trigger_source_register(BackfillTrigger())


def _since_path(path: str, *, both: bool) -> str:
    """A path into the condition made of `where` and `since` (where.and[0]..., where.and[1]...) as the caller
    wrote them (where..., since.column, since.after)."""
    bound = "where.and[1]" if both else "where"
    if path.startswith(bound):
        rest = path[len(bound) :]
        return "since.after" if rest.startswith(".value") else "since.column" if rest.startswith(".") else "since"
    return "where" + path[len("where.and[0]") :] if both and path.startswith("where.and[0]") else path


def _cause(key) -> str:
    """A row's key as a run's cause: its JSON, or a digest of it when longer than the column holds."""
    text = exactjson.dumps(key, sort_keys=True, separators=(",", ":"))
    return text if len(text) <= 100 else "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def workflow_backfill(
    *,
    workflow,
    where: dict | None = None,
    since: dict | None = None,
    after=None,
    limit: int = BACKFILL_LIMIT,
    dry_run: bool = False,
    actor: str,
) -> dict:
    """Start runs of the workflow's published version for existing rows of its table; or, with `dry_run`, say
    what it would start.

    `where` is a structured condition over the table's columns; `since` ({"column", "after"}) bounds a column
    from below; `after` is the `next` of an earlier call (the key the page starts after); `limit` the rows of
    this call (1 to BACKFILL_MAX). Returns {"dry_run", "rows" (matching rows in this page), "next" (the
    key to pass as `after`, or None when no rows are left), and "started" (runs started; rows already
    backfilled start none) or, for a dry run, "matched" (rows matching in all), "would_start" and
    "examples" (the first rows that would start, each rendered: {"row_key", "steps", "held", "organization",
    "error"}, as the preview on a real row shows them)}.

    Runs start queued at low priority, after this call commits, with their audit rows and one
    `workflow.backfilled` audit row. Raises InvalidInput (no published version, not a per-row database
    trigger, a predicate that does not fit the table) and CustomerDatabaseUnavailable.
    """
    version = workflow.published_version
    if version is None:
        raise InvalidInput("Publish the workflow first: a backfill starts runs of its published version.")
    trigger = version.definition["trigger"]
    if trigger["type"] != "database" or trigger.get("for_each", "statement") != "row" or not version.rows_from:
        raise InvalidInput("A backfill starts one run per row: it needs a database trigger with for_each: row.")
    if not 1 <= limit <= BACKFILL_MAX:
        raise InvalidInput(f"From 1 to {BACKFILL_MAX} rows per call.", field="limit")
    if where is not None and (not isinstance(where, dict) or not where):
        raise InvalidInput(
            'A condition over the table\'s columns, e.g. {"column": "paid", "op": "eq", "value": true}; leave `where` '
            "out to backfill every row.",
            field="where",
        )
    condition = where
    if since:
        bound = {"column": since["column"], "op": "gte", "value": since["after"]}
        condition = {"and": [where, bound]} if where else bound
    try:
        keys, matched = backfill_keys(
            connection=version.connection,
            rows_from=version.rows_from,
            where=condition,
            after=after,
            limit=limit + 1,
            count=dry_run,
        )
    except psycopg.Error as exc:
        raise CustomerDatabaseUnavailable.from_error(exc) from exc
    except InvalidInput as exc:
        if since:  # errors of the `since` bound are named under `since`, the rest under `where`
            exc.fields = {_since_path(path, both=bool(where)): reason for path, reason in exc.fields.items()}
        raise
    more, keys = len(keys) > limit, keys[:limit]
    causes = [_cause(key) for key in keys]
    # A row backfilled by any version of the workflow is done: publishing again (a fixed typo) and repeating
    # the backfill messages nobody twice.
    done = set(
        Run.objects.filter(workflow_version__workflow=workflow, source=BACKFILL.name, cause_id__in=causes).values_list(
            "cause_id", flat=True
        )
    )
    new = [(key, cause) for key, cause in zip(keys, causes) if cause not in done]
    result: dict = {"dry_run": dry_run, "rows": len(keys), "next": keys[-1] if more else None}
    if dry_run:
        examples = []
        for key, _ in new[:EXAMPLES]:
            sample = workflow_preview_sample(workflow=workflow, row_key=key, definition=version.definition)
            steps = workflow_preview(workflow=workflow, sample=sample, definition=version.definition, real=True)
            examples.append(
                {"row_key": key, "steps": steps, **workflow_preview_outcome(workflow=workflow, sample=sample)}
            )
        return result | {"matched": matched, "would_start": len(new), "examples": examples}
    now = timezone.now().isoformat()
    with transaction.atomic():
        launched = insert_rows(
            Run,
            [
                {
                    "source": BACKFILL.name,
                    "cause_id": cause,
                    "event_id": None,
                    "workflow_version_id": version.id,
                    "product_id": workflow.product_id,
                    "organization_id": None,
                    "request_id": None,
                    "rerun_of_id": None,
                    "recipient_index": 0,
                    "recipient": {},
                    "priority": Priority.LOW,
                    "status": RunStatus.QUEUED,
                    "step_index": 0,
                    "state": {"backfill_key": key},
                    "waiting_on": "",
                    "error": "",
                    "enqueued_at": now,
                    "created_at": now,
                    "updated_at": now,
                }
                for key, cause in new
            ],
            returning="id",
            on_conflict="ON CONFLICT DO NOTHING",
        )
        audit_record_many(
            [
                AuditEntry(
                    action="run.launched",
                    target_type="run",
                    target_id=run_id,
                    product_id=workflow.product_id,
                    data={"backfill": True, "workflow": workflow.key, "version": version.version},
                )
                for run_id in launched
            ]
        )
        audit_record(
            action="workflow.backfilled",
            actor=actor,
            target_type="workflow",
            target_id=workflow.key,
            product_id=workflow.product_id,
            data={
                "version": version.version,
                "where": where,
                "since": since,
                "after": after,
                "rows": len(keys),
                "started": len(launched),
                "next": result["next"],
            },
        )
        runs_enqueue_on_commit(list(launched), Priority.LOW)
    return result | {"started": len(launched)}


# Pages one queued backfill action starts before it queues the next part of itself.
PAGES_PER_ACTION = 10


def workflow_backfill_queued(*, workflow_id: int, actor: str, after=None) -> dict:
    """Backfill every row of the workflow's table, as queued by an operator from the admin: PAGES_PER_ACTION
    pages of BACKFILL_LIMIT rows, then the rest queued as another action from where it stopped. Repeat-safe:
    rows already backfilled start nothing. Returns {"started", "next"}."""
    from apps.core.actions import action_queue
    from apps.workflows.models import Workflow

    workflow = Workflow.objects.select_related("published_version").filter(id=workflow_id).first()
    if workflow is None:
        return {"started": 0, "next": None}
    started = 0
    for _ in range(PAGES_PER_ACTION):
        result = workflow_backfill(workflow=workflow, after=after, limit=BACKFILL_LIMIT, actor=actor)
        started, after = started + result["started"], result["next"]
        if after is None:
            break
    if after is not None:
        with transaction.atomic():
            action_queue(
                name="workflow.backfill",
                target_type="workflow",
                target_id=workflow.id,
                args={"workflow_id": workflow.id, "after": after},
                actor=actor,
            )
    return {"started": started, "next": after}
