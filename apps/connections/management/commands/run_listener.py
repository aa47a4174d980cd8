"""The `listener` process: picks up new events from every capturing customer database within moments.

1. Adaptive polling: each connection is read every ROWBELL_PICKUP_ACTIVE_SECONDS while it has events,
   backing off to ROWBELL_PICKUP_IDLE_SECONDS when quiet, so an idle connection costs a few index probes
   a second and a lone change is read within a few hundred milliseconds.
2. With ROWBELL_CAPTURE_NOTIFY, triggers also NOTIFY (at most once per statement); the listener LISTENs
   on each connection and reads the one that woke it at once.
The beat poller still reads every connection: a lost wake-up costs latency, never an event. Connections
that fail are reopened on the next refresh; new connections are picked up the same way.
Redis is not needed to record events: the runs and deliveries are hinted after commit under
apps.core.hints' policy (never raises), so with the broker away events and runs are still recorded and
the reconciler hints them later. Any other error of one connection's read is logged and that connection
is read again after ERROR_PAUSE_SECONDS: the process goes on for the others.
"""

import logging
import selectors
import time

import psycopg
from django.conf import settings
from django.core.management.base import BaseCommand
from django.db import DatabaseError, close_old_connections
from psycopg import sql

from apps.connections.capture import NOTIFY_CHANNEL
from apps.connections.customer import customer_connect, failure_reason
from apps.connections.models import Connection
from apps.connections.pickup import POLL_BATCH, event_log_poll
from apps.core.shutdown import stop_on_signals

logger = logging.getLogger("rowbell.listener")
REFRESH_SECONDS = 10.0
ERROR_PAUSE_SECONDS = 1.0


class Command(BaseCommand):
    help = "Run the event pick-up process: adaptive polling plus LISTEN/NOTIFY wake-ups (a Procfile process)."

    def handle(self, *args, **options) -> None:
        stop = stop_on_signals()
        self.selector = selectors.DefaultSelector()
        self.listening: dict = {}  # connection id -> LISTEN connection (with NOTIFY on)
        self.due: dict = {}  # connection id -> (next read at, current interval)
        refreshed = 0.0
        self.stdout.write("Listener started.")
        while not stop.is_set():
            now = time.monotonic()
            if now - refreshed > REFRESH_SECONDS:
                self._refresh()
                refreshed = now
            wait = min([at for at, _ in self.due.values()] + [now + 1.0]) - now
            for key, _ in self.selector.select(timeout=max(0.0, wait)):
                connection_id, conn = key.data
                try:
                    woke = list(conn.notifies(timeout=0))
                except psycopg.Error:
                    logger.warning("Lost the listening connection to %s; it will be reopened.", connection_id)
                    self._unlisten(connection_id)
                    continue
                if woke and connection_id in self.due:
                    self.due[connection_id] = (0.0, settings.ROWBELL_PICKUP_ACTIVE_SECONDS)
            now = time.monotonic()
            for connection_id, (at, interval) in list(self.due.items()):
                if at <= now:
                    read = self._read(connection_id)
                    if read is None:  # an unexpected error, logged: this connection pauses, the others go on
                        self.due[connection_id] = (time.monotonic() + ERROR_PAUSE_SECONDS, interval)
                        continue
                    interval = (
                        settings.ROWBELL_PICKUP_ACTIVE_SECONDS
                        if read
                        else min(settings.ROWBELL_PICKUP_IDLE_SECONDS, interval * 1.5)
                    )
                    self.due[connection_id] = (time.monotonic() + interval, interval)
        for connection_id in list(self.listening):
            self._unlisten(connection_id)
        self.stdout.write("Listener stopped.")

    def _read(self, connection_id) -> int | None:
        """Read the connection's log until a batch is short; return how many events, or None after an
        unexpected error (logged with its traceback)."""
        total = 0
        try:
            while True:
                read = event_log_poll(connection_id=connection_id) or 0
                total += read
                if read < POLL_BATCH:
                    return total
        except DatabaseError:
            logger.warning("Cannot reach the service database; retrying.", exc_info=True)
            close_old_connections()
            return total
        except Exception:  # a bug or an unforeseen failure must not stop pick-up for every connection
            logger.exception(
                "Pick-up of connection %s failed; trying again in %.0f s.", connection_id, ERROR_PAUSE_SECONDS
            )
            close_old_connections()
            return None

    def _refresh(self):
        try:
            close_old_connections()
            wanted = {c.id: c for c in Connection.objects.filter(capture_installed_at__isnull=False)}
        except DatabaseError:
            logger.warning("Cannot reach the service database; retrying.", exc_info=True)
            return
        for connection_id in set(self.due) - set(wanted):
            self.due.pop(connection_id, None)
            self._unlisten(connection_id)
        for connection_id, connection in wanted.items():
            self.due.setdefault(connection_id, (0.0, settings.ROWBELL_PICKUP_ACTIVE_SECONDS))
            if settings.ROWBELL_CAPTURE_NOTIFY and connection_id not in self.listening:
                self._listen(connection_id, connection)

    def _listen(self, connection_id, connection):
        try:
            conn = customer_connect(connection)
            conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(NOTIFY_CHANNEL)))
        except psycopg.Error as exc:
            logger.warning("Cannot listen on %s: %s", connection.name, failure_reason(exc))
            return
        self.listening[connection_id] = conn
        self.selector.register(conn.fileno(), selectors.EVENT_READ, (connection_id, conn))

    def _unlisten(self, connection_id):
        conn = self.listening.pop(connection_id, None)
        if conn is None:
            return
        try:
            self.selector.unregister(conn.fileno())
        except (KeyError, ValueError, OSError):
            pass
        conn.close()
