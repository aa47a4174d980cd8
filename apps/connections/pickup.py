"""Pick-up: read new events from a customer's event log into the service database, never skipping one.

A `bigserial` id is taken before commit, so transactions commit out of order and `id > cursor` would lose
rows. Each event carries its transaction id (xid8); the poller reads only events whose transaction is
older than its snapshot's xmin, so every transaction it reads from has finished and no later commit can
add an event below the cursor, which is ordered on (xid, id). Events and the advanced cursor are written
in one service-database transaction, so a crash repeats a read instead of losing it.
"""

from __future__ import annotations

from datetime import datetime

import psycopg
from django.db import transaction
from django.utils import timezone
from psycopg import sql

from apps.core.bulk import insert_rows

from .customer import customer_connect, customer_session, failure_reason
from .drift import capture_errors_note
from .models import Connection, Event

POLL_BATCH = 1000

POLL_SQL = """
SELECT id, xid::text, captured_at, capture, table_name, op, ids, detail
FROM {log}
WHERE (xid, id) > (%(xid)s::text::xid8, %(id)s)
  AND xid < pg_snapshot_xmin(pg_current_snapshot())
ORDER BY xid, id
LIMIT %(limit)s
"""


def event_log_poll(*, connection_id, limit: int = POLL_BATCH) -> int | None:
    """Read up to `limit` new events of one connection; return how many, or None if another poller
    holds the connection (at most one poller per connection, across any number of processes)."""
    with transaction.atomic():
        connection = Connection.objects.select_for_update(skip_locked=True).filter(id=connection_id).first()
        if connection is None:
            return None
        now = timezone.now()
        try:
            with customer_session(connection) as conn:
                rows = conn.execute(
                    sql.SQL(POLL_SQL).format(log=sql.Identifier(connection.schema, "event_log")),
                    {"xid": str(connection.cursor_xid), "id": connection.cursor_id, "limit": limit},
                ).fetchall()
        except psycopg.Error as exc:
            # The database went away (or the log is missing): say so, keep the cursor, try again later.
            reason = failure_reason(exc)
            Connection.objects.filter(id=connection.id).update(last_poll_at=now, last_error=reason,
                                                               last_error_at=now)
            return 0
        if rows:
            from apps.deliveries.services import deliveries_for_events
            from apps.runs.services import runs_for_events

            # One statement, one parameter; ON CONFLICT: an event read again is recorded once.
            fresh = [Event(connection=connection, source_id=r[0], xid=int(r[1]), captured_at=_aware(r[2]),
                           capture=r[3], table_name=r[4], op=r[5], ids=r[6], detail=r[7], recorded_at=now)
                     for r in rows]
            recorded_at = now.isoformat()
            inserted = insert_rows(Event, [
                {"connection_id": connection.id, "source_id": e.source_id, "xid": e.xid, "captured_at": e.captured_at,
                 "capture": e.capture, "table_name": e.table_name, "op": e.op, "ids": e.ids, "detail": e.detail,
                 "recorded_at": recorded_at} for e in fresh], returning=("id", "xid", "source_id"),
                on_conflict="ON CONFLICT DO NOTHING")
            by_key = {(int(xid), source_id): pk for pk, xid, source_id in inserted}
            recorded = []
            for event in fresh:
                event.id = by_key.get((event.xid, event.source_id))
                if event.id is not None:
                    recorded.append(event)
            # The events' consequences are written in the same transaction as the events and the cursor.
            deliveries_for_events(events=recorded)
            runs_for_events(events=recorded)
            capture_errors_note(connection=connection, events=recorded)
            last = rows[-1]
            Connection.objects.filter(id=connection.id).update(cursor_xid=int(last[1]), cursor_id=last[0],
                                                               last_poll_at=now, last_error="")
        else:
            Connection.objects.filter(id=connection.id).update(last_poll_at=now, last_error="")
    return len(rows)


def _aware(value: datetime) -> datetime:
    return value if timezone.is_aware(value) else timezone.make_aware(value)


BACKLOG_SQL = """
SELECT count(*), min(captured_at)
FROM {log}
WHERE (xid, id) > (%(xid)s::text::xid8, %(id)s)
"""


def connection_health(*, connection: Connection) -> dict:
    """Backlog (events written but not yet read), age of the oldest of them, last poll, last error."""
    health = {"capture_installed": connection.capture_installed_at is not None,
              "last_poll_at": connection.last_poll_at, "last_error": connection.last_error,
              "last_error_at": connection.last_error_at, "backlog": None, "oldest_unread_age_seconds": None,
              "reachable": None}
    if not health["capture_installed"]:
        return health
    try:
        with customer_connect(connection) as conn:
            count, oldest = conn.execute(
                sql.SQL(BACKLOG_SQL).format(log=sql.Identifier(connection.schema, "event_log")),
                {"xid": str(connection.cursor_xid), "id": connection.cursor_id},
            ).fetchone()
    except psycopg.Error as exc:
        health["reachable"] = False
        health["last_error"] = health["last_error"] or failure_reason(exc)
        return health
    health.update(reachable=True, backlog=count,
                  oldest_unread_age_seconds=round((timezone.now() - oldest).total_seconds(), 3) if oldest else 0)
    return health


PRUNE_SQL = """
DELETE FROM {log} WHERE (xid, id) IN (
    SELECT xid, id FROM {log}
    WHERE (xid, id) <= (%(xid)s::text::xid8, %(id)s) AND captured_at < now() - make_interval(secs => %(age)s)
    ORDER BY xid, id
    LIMIT %(batch)s
)
"""


def event_log_prune(*, connection: Connection, older_than_seconds: float, batch: int = 5000,
                    max_batches: int = 100) -> int:
    """Delete consumed events (at or below the cursor) older than the given age, in batches, so the
    customer's event log does not grow without bound. Events not read yet are never deleted."""
    deleted = 0
    with customer_connect(connection) as conn:
        statement = sql.SQL(PRUNE_SQL).format(log=sql.Identifier(connection.schema, "event_log"))
        for _ in range(max_batches):
            count = conn.execute(statement, {"xid": str(connection.cursor_xid), "id": connection.cursor_id,
                                             "age": older_than_seconds, "batch": batch}).rowcount
            deleted += count
            if count < batch:
                break
    return deleted
