"""Pick-up: read new events from a customer's event log into the service database, never skipping one and
never waiting for transactions that wrote nothing to it.

A `bigserial` id is taken before commit, so transactions commit out of order and `id > cursor` would lose
rows; a horizon at the snapshot's xmin never skips, but it waits for every open transaction of the whole
server, even one in another database. So the log is read in batches closed between two snapshots, as PgQ
does (https://github.com/pgq/pgq: a tick, `pgq.ticker`, records a `txid_current_snapshot()`; a batch is the
events of the transactions that committed between two ticks, read by the query `pgq.batch_event_sql`
builds). Each event carries its top-level transaction id (xid8). With the PostgreSQL functions for
snapshots (pg_current_snapshot, pg_visible_in_snapshot, pg_snapshot_xmin/xmax/xip:
https://www.postgresql.org/docs/15/functions-info.html, "Transaction ID and Snapshot Information Functions"):

- `Connection.consumed_snapshot` (text `xmin:xmax:xip,...`) is the end of the last closed batch: every
  event whose transaction is visible in it has been read. A new connection starts at `1:1:`, in which
  nothing is visible, and reads its whole log.
- A batch ends at a newer snapshot S and holds the events whose xid is visible in S and not in
  `consumed_snapshot`. A transaction's events become visible together, when it commits, so each transaction
  falls whole into the first batch whose end sees it: nothing is skipped, nothing is read twice, and an
  open transaction (here or in any other database of the server) delays only its own events.
- A batch is read in pages of `limit`, ordered by (xid, id), the log's primary key: while one is open,
  `batch_snapshot` is its end and (cursor_xid, cursor_id) the last event read. A page shorter than
  `limit` closes it: consumed_snapshot := batch_snapshot, cursor := (0, 0).
- The events and the advanced state are written in ONE service-database transaction: a crash repeats a
  read, never loses one, and the (connection, xid, source_id) constraint records a repeated event once.
"""

from __future__ import annotations

from datetime import datetime

import psycopg
from django.db import transaction
from django.utils import timezone
from psycopg import sql

from apps.core.bulk import insert_rows

from .consumers import event_consumers
from .customer import APPLICATION_NAME, customer_connect, customer_session, failure_reason
from .drift import capture_errors_note
from .models import NOTHING_CONSUMED, Connection, Event

POLL_BATCH = 1000

# One statement per page. The batch's end is the stored one while a batch is open, otherwise the
# statement's own snapshot (pg_current_snapshot() is the snapshot the statement reads with, so every
# transaction visible in it has its rows visible to this very scan): opening the batch costs no round
# trip, and the empty page of an idle log closes it at once. The LEFT JOIN returns that snapshot even
# when no event does.
# Index-friendly, as pgq.batch_event_sql: the events of transactions that were in progress at the
# consumed snapshot (its xip list, each probed on the (xid, id) key), UNION ALL the range
# consumed.xmax <= xid < batch.xmax; never a scan from the start of the log, which keeps consumed events
# for days. Each branch is ordered and limited on its own so that a page stops after `limit` rows.
POLL_SQL = """
WITH batch AS MATERIALIZED (
    SELECT %(consumed)s::text::pg_snapshot AS consumed,
           coalesce(%(batch)s::text::pg_snapshot, pg_current_snapshot()) AS snapshot
)
SELECT batch.snapshot::text, e.id, e.xid::text, e.captured_at, e.capture, e.table_name, e.op, e.ids,
       to_jsonb(e) -> 'detail'  -- NULL from a log installed before the column (the health tick adds it)
FROM batch LEFT JOIN LATERAL (
    (SELECT l.* FROM pg_snapshot_xip(batch.consumed) AS x (xid)
     CROSS JOIN LATERAL (
         SELECT * FROM {log} l
         WHERE l.xid = x.xid AND (l.xid, l.id) > (%(xid)s::text::xid8, %(id)s)
         ORDER BY l.id
         LIMIT %(limit)s
     ) l
     WHERE x.xid >= %(xid)s::text::xid8 AND pg_visible_in_snapshot(x.xid, batch.snapshot)
     ORDER BY l.xid, l.id
     LIMIT %(limit)s)
    UNION ALL
    (SELECT l.* FROM {log} l
     WHERE l.xid >= pg_snapshot_xmax(batch.consumed) AND l.xid < pg_snapshot_xmax(batch.snapshot)
       AND (l.xid, l.id) > (%(xid)s::text::xid8, %(id)s)
       AND pg_visible_in_snapshot(l.xid, batch.snapshot)
     ORDER BY l.xid, l.id
     LIMIT %(limit)s)
    ORDER BY xid, id
    LIMIT %(limit)s
) e ON true
ORDER BY e.xid, e.id
"""


def poll_statement(connection: Connection, *, limit: int = POLL_BATCH) -> tuple[sql.Composable, dict]:
    """The statement that reads the next page of the connection's log, and its parameters.

    Its rows: (batch end snapshot as text, id, xid as text, captured_at, capture, table_name, op, ids);
    one row with the event columns NULL when the page is empty.
    """
    statement = sql.SQL(POLL_SQL).format(log=sql.Identifier(connection.schema, "event_log"))
    return statement, {**_state_params(connection), "limit": limit}


def _state_params(connection: Connection) -> dict:
    return {
        "consumed": connection.consumed_snapshot or NOTHING_CONSUMED,
        "batch": connection.batch_snapshot or None,
        "xid": str(connection.cursor_xid),
        "id": connection.cursor_id,
    }


def event_log_poll(*, connection_id, limit: int = POLL_BATCH) -> int | None:
    """Read the next page (up to `limit` events) of one connection's log and record them; return how
    many, or None if another poller holds the connection (at most one poller per connection, across any
    number of processes).

    Fewer than `limit` means the batch is closed: the events committed since are read by the next call.
    A customer database that cannot be read is recorded on the connection (last_error) and gives 0; the
    state does not move. Errors of the service database are raised.
    """
    with transaction.atomic():
        connection = Connection.objects.select_for_update(skip_locked=True).filter(id=connection_id).first()
        if connection is None:
            return None
        now = timezone.now()
        try:
            with customer_session(connection) as conn:
                statement, params = poll_statement(connection, limit=limit)
                page = conn.execute(statement, params).fetchall()
        except psycopg.Error as exc:
            # The database went away (or the log is missing): say so, keep the state, try again later.
            reason = failure_reason(exc)
            Connection.objects.filter(id=connection.id).update(last_poll_at=now, last_error=reason, last_error_at=now)
            return 0
        snapshot = page[0][0]
        rows = [r[1:] for r in page if r[1] is not None]
        if rows:
            # One statement, one parameter; ON CONFLICT: an event read again is recorded once.
            fresh = [
                Event(
                    connection=connection,
                    source_id=r[0],
                    xid=int(r[1]),
                    captured_at=_aware(r[2]),
                    capture=r[3],
                    table_name=r[4],
                    op=r[5],
                    ids=r[6],
                    detail=r[7],
                    recorded_at=now,
                )
                for r in rows
            ]
            recorded_at = now.isoformat()
            inserted = insert_rows(
                Event,
                [
                    {
                        "connection_id": connection.id,
                        "source_id": e.source_id,
                        "xid": e.xid,
                        "captured_at": e.captured_at,
                        "capture": e.capture,
                        "table_name": e.table_name,
                        "op": e.op,
                        "ids": e.ids,
                        "detail": e.detail,
                        "recorded_at": recorded_at,
                    }
                    for e in fresh
                ],
                returning=("id", "xid", "source_id"),
                on_conflict="ON CONFLICT DO NOTHING",
            )
            by_key = {(int(xid), source_id): pk for pk, xid, source_id in inserted}
            recorded = []
            for event in fresh:
                event.id = by_key.get((event.xid, event.source_id))
                if event.id is not None:
                    recorded.append(event)
            # The events' consequences are written in the same transaction as the events and the state.
            # Row-event deliveries and workflow runs, written in this transaction (see consumers.py).
            event_consumers.call_each(events=recorded)
            capture_errors_note(connection=connection, events=recorded)
        if len(rows) < limit:  # the batch is read whole: it is consumed, the next one starts after it
            state = {"consumed_snapshot": snapshot, "batch_snapshot": "", "cursor_xid": 0, "cursor_id": 0}
        else:
            state = {"batch_snapshot": snapshot, "cursor_xid": int(rows[-1][1]), "cursor_id": rows[-1][0]}
        Connection.objects.filter(id=connection.id).update(**state, last_poll_at=now, last_error="")
    return len(rows)


def _aware(value: datetime) -> datetime:
    return value if timezone.is_aware(value) else timezone.make_aware(value)


# The events not read yet: not visible in the consumed snapshot (the same two index-friendly branches as
# the poll), less those of the open batch at or below its cursor. Only committed events are counted.
BACKLOG_SQL = """
WITH state AS MATERIALIZED (
    SELECT %(consumed)s::text::pg_snapshot AS consumed,
           coalesce(%(batch)s::text::pg_snapshot, pg_current_snapshot()) AS batch
)
SELECT count(*), min(u.captured_at)
FROM state CROSS JOIN LATERAL (
    SELECT l.xid, l.id, l.captured_at FROM {log} l
    WHERE l.xid = ANY(ARRAY(SELECT pg_snapshot_xip(state.consumed)))  -- probed by key, not joined by hash
    UNION ALL
    SELECT l.xid, l.id, l.captured_at FROM {log} l WHERE l.xid >= pg_snapshot_xmax(state.consumed)
) u
WHERE NOT ((u.xid, u.id) <= (%(xid)s::text::xid8, %(id)s) AND pg_visible_in_snapshot(u.xid, state.batch))
"""

# Who holds events back: a transaction that wrote to the event log holds RowExclusiveLock on it until it
# ends (pg_locks is readable by any role). pg_stat_activity shows another role's session only in part to
# a role without pg_read_all_stats: user and application name, but no state and no xact_start. A prepared
# transaction (two-phase commit) has no session: its locks have no pid, and pg_prepared_xacts, found
# through its transaction id lock, says whose it is and since when it is prepared.
HELD_BACK_SQL = """
SELECT l.pid, coalesce(a.usename, p.owner), a.application_name,
       coalesce(a.state, CASE WHEN p.gid IS NOT NULL THEN 'prepared' END),
       coalesce(a.xact_start, p.prepared),
       extract(epoch FROM statement_timestamp() - coalesce(a.xact_start, p.prepared))::float8
FROM pg_locks l
LEFT JOIN pg_stat_activity a ON a.pid = l.pid
LEFT JOIN pg_locks x ON l.pid IS NULL AND x.pid IS NULL AND x.locktype = 'transactionid'
                        AND x.virtualtransaction = l.virtualtransaction
LEFT JOIN pg_prepared_xacts p ON p.transaction = x.transactionid
WHERE l.locktype = 'relation' AND l.mode = 'RowExclusiveLock' AND l.granted
  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND l.relation = (SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                    WHERE n.nspname = %(schema)s AND c.relname = 'event_log')
  AND l.pid IS DISTINCT FROM pg_backend_pid()
  AND a.application_name IS DISTINCT FROM %(own)s
ORDER BY coalesce(a.xact_start, p.prepared) NULLS LAST, l.pid
"""


def connection_health(*, connection: Connection) -> dict:
    """What pick-up looks like from the customer database, read now.

    Returns a dict: capture_installed (bool); reachable (bool, None when nothing is installed to read);
    backlog (committed events not read yet, int or None); oldest_unread_age_seconds (float seconds, 0 with
    no backlog, None when unknown); held_back_by: the open transactions, other than Rowbell's own
    sessions, that have written to the event log and whose events therefore wait for their commit, as
    [{pid, user, application_name, state, xact_start, seconds_open}], oldest first (state, xact_start and
    seconds_open are None when the connection's role may not see them: another role's session, without
    pg_read_all_stats; a prepared transaction has pid None, state "prepared", and the time it was
    prepared as xact_start); and the last poll's last_poll_at, last_error, last_error_at. An unreachable
    database gives reachable False and its reason in last_error; nothing is raised for it.
    """
    health = {
        "capture_installed": connection.capture_installed_at is not None,
        "last_poll_at": connection.last_poll_at,
        "last_error": connection.last_error,
        "last_error_at": connection.last_error_at,
        "backlog": None,
        "oldest_unread_age_seconds": None,
        "held_back_by": None,
        "reachable": None,
    }
    if not health["capture_installed"]:
        return health
    try:
        with customer_connect(connection) as conn:
            backlog = conn.execute(
                sql.SQL(BACKLOG_SQL).format(log=sql.Identifier(connection.schema, "event_log")),
                _state_params(connection),
            ).fetchone()
            assert backlog is not None  # an aggregate: one row
            count, oldest = backlog
            held = conn.execute(HELD_BACK_SQL, {"schema": connection.schema, "own": APPLICATION_NAME}).fetchall()
    except psycopg.Error as exc:
        health["reachable"] = False
        health["last_error"] = health["last_error"] or failure_reason(exc)
        return health
    health.update(
        reachable=True,
        backlog=count,
        oldest_unread_age_seconds=round((timezone.now() - oldest).total_seconds(), 3) if oldest else 0,
        held_back_by=[
            {
                "pid": pid,
                "user": user,
                "application_name": app,
                "state": state,
                "xact_start": started,
                "seconds_open": round(age, 3) if age is not None else None,
            }
            for pid, user, app, state, started, age in held
        ],
    )
    return health


# Consumed events are those visible in the consumed snapshot: below its xmax and not in its xip list (a
# wider bound than its xmin, which an idle transaction anywhere on the server holds back).
PRUNE_SQL = """
DELETE FROM {log} WHERE (xid, id) IN (
    SELECT xid, id FROM {log}
    WHERE xid < pg_snapshot_xmax(%(consumed)s::text::pg_snapshot)
      AND pg_visible_in_snapshot(xid, %(consumed)s::text::pg_snapshot)
      AND captured_at < now() - make_interval(secs => %(age)s)
    ORDER BY xid, id
    LIMIT %(batch)s
)
"""


def event_log_prune(
    *, connection: Connection, older_than_seconds: float, batch: int = 5000, max_batches: int = 100
) -> int:
    """Delete consumed events (those of closed batches) captured more than `older_than_seconds` ago, at
    most `batch` rows per statement and `max_batches` statements, so the customer's event log does not
    grow without bound; return how many. Events not read yet are never deleted (a stale `connection` only
    deletes less). Raises psycopg.Error when the customer database cannot be reached."""
    deleted = 0
    with customer_connect(connection) as conn:
        statement = sql.SQL(PRUNE_SQL).format(log=sql.Identifier(connection.schema, "event_log"))
        for _ in range(max_batches):
            count = conn.execute(
                statement,
                {
                    "consumed": connection.consumed_snapshot or NOTHING_CONSUMED,
                    "age": older_than_seconds,
                    "batch": batch,
                },
            ).rowcount
            deleted += count
            if count < batch:
                break
    return deleted
