"""Retention: Rowbell's own tables stay bounded however long it runs.

Age is counted from when work finished (a run's `completed_at`, a delivery's), not from when it started: a run
that waited a month and finished today is kept its whole retention.

Beat calls `retention_prune` every ROWBELL_RETENTION_INTERVAL seconds. Per product, what finished more than its
retention ago (`Product.retention_days`, else ROWBELL_RETENTION_DAYS) is deleted, oldest first, in batches of
ROWBELL_RETENTION_BATCH rows, each batch its own short transaction (rows taken with SKIP LOCKED: a worker
holding one is never waited for):

1. finished runs (completed, failed, cancelled), with their steps, batch items, escalation and deliveries (with
   their attempts and status history);
2. finished deliveries that belong to no run (row-event webhooks, escalation notices);
3. trigger requests none of whose runs or deliveries is left;
4. recorded events (connections' `Event`) no run or delivery refers to any more;

and, for the whole service, finished operators' actions after ROWBELL_RETENTION_DAYS and the audit trail after
ROWBELL_AUDIT_RETENTION_DAYS. Never deleted: a run that is queued, running or waiting; a failed run whose
escalation operators have not decided (re-run or dismissed); a run another run re-runs; a run whose delivery is
queued, sending or held, or whose batch is still open; a delivery not final; an accepted request not started.

Each deleted row is counted in `rowbell_retention_deleted_rows_total{table}` (apps.core.metrics).
"""

from __future__ import annotations

import logging
import random
import time
from datetime import timedelta

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from apps.core import metrics

logger = logging.getLogger(__name__)

FINISHED_RUNS = ("completed", "failed", "cancelled")
UNFINISHED_DELIVERIES = ("queued", "sending", "held")
# A tick stops starting batches after this long: the next tick goes on.
TICK_SECONDS = 20.0

_OLD_RUNS = """
SELECT r.id FROM runs_run r
WHERE r.product_id = %(product)s AND r.created_at < %(cutoff)s
  AND r.status IN ('completed', 'failed', 'cancelled')
  AND coalesce(r.completed_at, r.created_at) < %(cutoff)s  -- finished that long ago, however long it waited
  AND NOT EXISTS (SELECT 1 FROM runs_escalation e WHERE e.run_id = r.id AND e.decided_at IS NULL)
  AND NOT EXISTS (SELECT 1 FROM runs_run x WHERE x.rerun_of_id = r.id)
  AND NOT EXISTS (
      SELECT 1 FROM deliveries_delivery d WHERE d.run_id = r.id AND d.status IN ('queued', 'sending', 'held'))
  AND NOT EXISTS (SELECT 1 FROM runs_batch b WHERE b.owner_id = r.id AND b.status = 'open')
  AND NOT EXISTS (
      SELECT 1 FROM runs_batchitem i JOIN runs_batch b ON b.id = i.batch_id JOIN runs_run o ON o.id = b.owner_id
      WHERE i.run_id = r.id AND (b.status = 'open' OR o.status NOT IN ('completed', 'failed', 'cancelled')))
ORDER BY r.created_at
LIMIT %(batch)s
FOR UPDATE OF r SKIP LOCKED
"""

# Children first: Django's CASCADE is not the database's, and the foreign keys are checked at commit.
_RUN_CHILDREN = [
    (
        "deliveries_deliveryattempt",
        "DELETE FROM deliveries_deliveryattempt WHERE delivery_id IN "
        "(SELECT id FROM deliveries_delivery WHERE run_id = ANY(%(ids)s))",
    ),
    (
        "deliveries_deliveryevent",
        "DELETE FROM deliveries_deliveryevent WHERE delivery_id IN "
        "(SELECT id FROM deliveries_delivery WHERE run_id = ANY(%(ids)s))",
    ),
    ("deliveries_delivery", "DELETE FROM deliveries_delivery WHERE run_id = ANY(%(ids)s)"),
    ("runs_runstep", "DELETE FROM runs_runstep WHERE run_id = ANY(%(ids)s)"),
    (
        "runs_batchitem",
        "DELETE FROM runs_batchitem WHERE run_id = ANY(%(ids)s) "
        "OR batch_id IN (SELECT id FROM runs_batch WHERE owner_id = ANY(%(ids)s))",
    ),
    ("runs_batch", "DELETE FROM runs_batch WHERE owner_id = ANY(%(ids)s)"),
    ("runs_escalation", "DELETE FROM runs_escalation WHERE run_id = ANY(%(ids)s)"),
    ("runs_run", "DELETE FROM runs_run WHERE id = ANY(%(ids)s)"),
]

_OLD_LONE_DELIVERIES = """
SELECT d.id FROM deliveries_delivery d
WHERE d.product_id = %(product)s AND d.created_at < %(cutoff)s AND d.run_id IS NULL
  AND d.status NOT IN ('queued', 'sending', 'held')
  AND coalesce(d.completed_at, d.created_at) < %(cutoff)s
ORDER BY d.product_id, d.created_at
LIMIT %(batch)s
FOR UPDATE SKIP LOCKED
"""

_DELIVERY_CHILDREN = [
    ("deliveries_deliveryattempt", "DELETE FROM deliveries_deliveryattempt WHERE delivery_id = ANY(%(ids)s)"),
    ("deliveries_deliveryevent", "DELETE FROM deliveries_deliveryevent WHERE delivery_id = ANY(%(ids)s)"),
    ("deliveries_delivery", "DELETE FROM deliveries_delivery WHERE id = ANY(%(ids)s)"),
]

_OLD_REQUESTS = """
DELETE FROM runs_triggerrequest WHERE id IN (
    SELECT q.id FROM runs_triggerrequest q
    WHERE q.product_id = %(product)s AND q.created_at < %(cutoff)s AND q.status = 'started'
      AND NOT EXISTS (SELECT 1 FROM runs_run r WHERE r.request_id = q.id)
      AND NOT EXISTS (SELECT 1 FROM deliveries_delivery d WHERE d.request_id = q.id)
    ORDER BY q.product_id, q.created_at
    LIMIT %(batch)s
    FOR UPDATE SKIP LOCKED)
"""

_OLD_EVENTS = """
DELETE FROM connections_event WHERE id IN (
    SELECT e.id FROM connections_event e
    WHERE e.connection_id = %(connection)s AND e.recorded_at < %(cutoff)s
      AND NOT EXISTS (SELECT 1 FROM runs_run r WHERE r.event_id = e.id)
      AND NOT EXISTS (SELECT 1 FROM deliveries_delivery d WHERE d.event_id = e.id)
    ORDER BY e.connection_id, e.recorded_at
    LIMIT %(batch)s
    FOR UPDATE SKIP LOCKED)
"""

# Ids grow with time: the oldest rows are the first by id, read through the primary key (no scan of the rows that
# stay). An unfinished action among them stays, and the rows after it wait for the next batch.
_OLD_ACTIONS = """
DELETE FROM core_queuedaction WHERE id IN (
    SELECT id FROM (SELECT id, status, requested_at FROM core_queuedaction ORDER BY id LIMIT %(batch)s) oldest
    WHERE status NOT IN ('queued', 'running') AND requested_at < %(cutoff)s)
"""

_OLD_AUDIT = """
DELETE FROM audit_auditevent WHERE id IN (
    SELECT id FROM (SELECT id, created_at FROM audit_auditevent ORDER BY id LIMIT %(batch)s) oldest
    WHERE created_at < %(cutoff)s)
"""


def _statements(statements: list[tuple[str, str]], params: dict, deleted: dict[str, int]) -> None:
    with connection.cursor() as cursor:
        for table, statement in statements:
            cursor.execute(statement, params)
            deleted[table] = deleted.get(table, 0) + cursor.rowcount


def _still_finished(run_ids: list[int]) -> list[int]:
    """The runs among `run_ids` whose deliveries are all still final once locked: a replay may have queued one
    again since they were picked (it commits before this lock is granted, or waits for this transaction)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT run_id, status FROM deliveries_delivery WHERE run_id = ANY(%s) ORDER BY id FOR UPDATE",
            [run_ids],
        )
        busy = {run_id for run_id, status in cursor.fetchall() if status in UNFINISHED_DELIVERIES}
    return [i for i in run_ids if i not in busy]


def _one(table: str, statement: str, params: dict, deleted: dict[str, int]) -> int:
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(statement, params)
        count = cursor.rowcount
        _count({table: count})
    if count:
        deleted[table] = deleted.get(table, 0) + count
    return count


def _count(deleted: dict[str, int]) -> None:
    metrics.counters_add(
        {metrics.series(metrics.RETENTION_DELETED, table=table): n for table, n in deleted.items() if n}
    )


def _groups(select: str, children: list[tuple[str, str]], params: dict, deleted: dict, deadline: float) -> None:
    """Delete what `select` picks, batch after batch, each with its children in one transaction."""
    while time.monotonic() < deadline:
        with transaction.atomic():
            with connection.cursor() as cursor:
                cursor.execute(select, params)
                ids = [row[0] for row in cursor.fetchall()]
            if not ids:
                return
            if children is _RUN_CHILDREN:
                ids = _still_finished(ids)
            batch: dict[str, int] = {}
            _statements(children, {"ids": ids}, batch)
            _count(batch)
        for table, n in batch.items():
            if n:
                deleted[table] = deleted.get(table, 0) + n
        if len(ids) < params["batch"]:
            return


def _drain(table: str, statement: str, params: dict, deleted: dict, deadline: float) -> None:
    while time.monotonic() < deadline and _one(table, statement, params, deleted) >= params["batch"]:
        pass


def retention_prune(*, now=None, budget_seconds: float = TICK_SECONDS) -> dict[str, int]:
    """Delete what is past its retention (see the module), for at most about `budget_seconds`; return the rows
    deleted per table. Safe to run in several processes at once (SKIP LOCKED), and to stop at any line: each
    batch commits on its own, whole."""
    from apps.connections.models import Connection
    from apps.tenants.models import Product

    now = now or timezone.now()
    deadline = time.monotonic() + budget_seconds
    batch = settings.ROWBELL_RETENTION_BATCH
    default_days = settings.ROWBELL_RETENTION_DAYS
    deleted: dict[str, int] = {}
    products = list(Product.objects.values_list("id", "retention_days"))
    random.shuffle(products)  # a product with a long backlog does not hold the others back tick after tick
    for product_id, days in products:
        params = {"product": product_id, "cutoff": now - timedelta(days=days or default_days), "batch": batch}
        _groups(_OLD_RUNS, _RUN_CHILDREN, params, deleted, deadline)
        _groups(_OLD_LONE_DELIVERIES, _DELIVERY_CHILDREN, params, deleted, deadline)
        _drain("runs_triggerrequest", _OLD_REQUESTS, params, deleted, deadline)
    retention_of = {product_id: days or default_days for product_id, days in products}
    for connection_id, product_id in Connection.all_objects.values_list("id", "product_id"):
        params = {
            "connection": connection_id,
            "cutoff": now - timedelta(days=retention_of.get(product_id, default_days)),
            "batch": batch,
        }
        _drain("connections_event", _OLD_EVENTS, params, deleted, deadline)
    _drain(
        "core_queuedaction",
        _OLD_ACTIONS,
        {"cutoff": now - timedelta(days=default_days), "batch": batch},
        deleted,
        deadline,
    )
    _drain(
        "audit_auditevent",
        _OLD_AUDIT,
        {"cutoff": now - timedelta(days=settings.ROWBELL_AUDIT_RETENTION_DAYS), "batch": batch},
        deleted,
        deadline,
    )
    if any(deleted.values()):
        logger.info("Retention deleted %s", ", ".join(f"{n} {t}" for t, n in sorted(deleted.items()) if n))
    return deleted
