"""`api`: runs started by the trigger API, one per recipient of an accepted request.

A run's cause is its request (`cause_id` is the request's id, `request` its key). Templates see the
request's `data`, the run's `recipient` and the `request_id`.

Launch (`requests_start`, the task the dispatcher hints with a batch of accepted requests) claims the
requests and executes their new runs in the same transaction, so that the common run (a few notify and
branch steps) is written once, where it stops, with its deliveries, and those are sent by the same task as
soon as they are committed: one Celery task per batch of requests, from trigger call to webhook.
"""

from __future__ import annotations

import json
import logging

from django.db import DatabaseError, InterfaceError, OperationalError, connection, transaction
from django.utils import timezone

from apps.core.instances import instance_build

from ..engine import RUN_BATCH, BatchedRuns, Writes, runs_attach
from ..models import Run, RunStatus, TriggerRequest, WaitingOn
from .base import TriggerSource, trigger_source_register

logger = logging.getLogger(__name__)

PRIORITY_ORDER = ("high", "normal", "low")


class ApiTrigger(TriggerSource):
    name = "api"

    def load(self, runs: list[Run]) -> None:
        requests = TriggerRequest.objects.only("id", "data").in_bulk({run.request_id for run in runs})
        for run in runs:
            run.request = requests[run.request_id]

    def context(self, run: Run, context: dict) -> None:
        context["data"] = run.request.data
        context["request_id"] = str(run.request_id)

    def cause(self, cause_id: str) -> dict:
        return {"request_id": cause_id}


API = trigger_source_register(ApiTrigger())


# Accepted -> started in one statement that also returns what the runs are made of: the hint's requests,
# and, up to the limit, others already hinted that no task has started yet (highest priority, then oldest,
# first). Under load, hints pile up behind busy workers while requests accumulate: a task that gets to
# work takes what accumulated, so batches grow with the load instead of staying one dispatcher pass
# wide, and the hints that come after find their requests started (nothing to do). A request another
# task holds or started is skipped: a repeated hint starts nothing twice.
# The rows are picked in a CTE, which runs once: as an `IN (subquery)` the planner may run the subquery
# again, and LIMIT with SKIP LOCKED would then pick more rows.
_CLAIM = """
WITH picked AS MATERIALIZED (
    SELECT id FROM runs_triggerrequest
    WHERE status = 'accepted' AND (id = ANY(%(ids)s::uuid[]) OR enqueued_at IS NOT NULL)
    ORDER BY id = ANY(%(ids)s::uuid[]) DESC, CASE priority WHEN 'high' THEN 0 WHEN 'normal' THEN 1 ELSE 2 END,
             created_at
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED)
UPDATE runs_triggerrequest r SET status = 'started'
FROM picked
WHERE r.id = picked.id AND r.status = 'accepted'
RETURNING r.id, r.product_id, r.organization_id, r.workflow_version_id, r.priority, r.recipients, r.data,
          r.created_at,
          -- Ids for its runs, one per recipient: runs built in memory are written once, where they stop.
          ARRAY(SELECT nextval(pg_get_serial_sequence('runs_run', 'id'))
                FROM generate_series(1, jsonb_array_length(r.recipients)))
"""
# Requests one task claims at most (its hint's, then others waiting).
REQUESTS_PER_TASK = 100


def _json(value):
    return json.loads(value) if isinstance(value, (str, bytes)) else value


def _claim_and_build(request_ids: list) -> list[Run]:
    """Claim the accepted requests among `request_ids` and build their runs (unsaved, ids taken), highest
    priority first, then oldest first. Call inside a transaction."""
    with connection.cursor() as cursor:
        cursor.execute(
            _CLAIM, {"ids": [str(i) for i in request_ids], "limit": max(REQUESTS_PER_TASK, len(request_ids))}
        )
        claimed = cursor.fetchall()
        if not claimed:
            return []
    claimed = [(*row[:5], _json(row[5]), _json(row[6]), row[7], row[8]) for row in claimed]
    claimed.sort(key=lambda r: (PRIORITY_ORDER.index(r[4]) if r[4] in PRIORITY_ORDER else 3, r[7]))
    now = timezone.now()
    runs = []
    for request_id, product_id, organization_id, version_id, priority, recipients, data, _, run_ids in claimed:
        ids = iter(run_ids)
        # What the runs' context reads of their request (ApiTrigger.context): its id and data.
        request = instance_build(TriggerRequest, {"id": request_id, "data": data}, saved=True)
        for index, recipient in enumerate(recipients):
            runs.append(
                instance_build(
                    Run,
                    {
                        "id": next(ids),
                        "request_id": request_id,
                        "event_id": None,
                        "source": API.name,
                        "cause_id": str(request_id),
                        "recipient_index": index,
                        "product_id": product_id,
                        "organization_id": organization_id,
                        "workflow_version_id": version_id,
                        "recipient": recipient,
                        "priority": priority,
                        "status": RunStatus.QUEUED,
                        "step_index": 0,
                        "state": {},
                        "waiting_on": WaitingOn.NOTHING,
                        "resume_at": None,
                        "rerun_of_id": None,
                        "error": "",
                        "enqueued_at": now,
                        "lease_until": None,
                        "claim": 0,
                        "created_at": now,
                        "updated_at": now,
                        "completed_at": None,
                    },
                    related={"request": request},
                )
            )
    return runs


def requests_start(*, request_ids: list) -> list[int]:
    """Create the runs of accepted trigger requests, one per recipient, and execute them; return their ids.

    1. Claim the requests (accepted -> started; a repeated hint claims nothing), and up to
       REQUESTS_PER_TASK in all with other hinted requests that wait (see _CLAIM), and build their runs.
    2. In the same transaction, the batched strategy (apps.runs.engine.BatchedRuns) executes the first
       RUN_BATCH runs and writes each where it stops, with its step rows, deliveries and audit rows; the
       rest are written queued and hinted to other workers in batches, so a large request is shared out.
    3. After commit: send the deliveries, go on with runs that need transactions of their own, hint runs
       whose product's time slice is spent on the `low` queue.

    A crash before the commit leaves the requests accepted: the reconciler hints them again.
    """
    batch = BatchedRuns()
    try:
        with transaction.atomic():
            runs = _claim_and_build(request_ids)
            if not runs:
                return []
            runs_attach(runs, causes=False)
            batch.advance(runs[:RUN_BATCH])
            for run in runs[RUN_BATCH:]:
                batch.writes.run(run)
                batch.writes.hint(run)
            batch.write()
    except (OperationalError, InterfaceError):
        raise
    except DatabaseError:
        # A step's write the database refused lost the batch: write the runs queued, for runs_execute,
        # which executes them one by one when a batch of them cannot be written.
        logger.exception("The runs of %d requests could not be written as executed; queueing them.", len(request_ids))
        with transaction.atomic():
            runs = _claim_and_build(request_ids)
            queued = Writes()
            for run in runs:
                queued.run(run)
                queued.hint(run)
            queued.flush()
        return [run.id for run in runs]
    batch.finish()
    return [run.id for run in runs]
