"""The `listener` process: LISTEN on every capturing customer database and read new events at once.

Triggers NOTIFY at most once per statement; this process waits on all its connections with one
selector and polls the connection that woke it. It is only a wake-up: the beat poller still reads
every connection every ROWBELL_POLL_INTERVAL, so a lost notification costs latency, never an event.
Connections that fail are reopened on the next refresh; new connections are picked up the same way.
"""

import logging
import selectors
import signal
import time

import psycopg
from django.core.management.base import BaseCommand
from django.db import DatabaseError, close_old_connections
from psycopg import sql

from apps.connections.capture import NOTIFY_CHANNEL
from apps.connections.customer import customer_connect
from apps.connections.models import Connection
from apps.connections.pickup import POLL_BATCH, event_log_poll

logger = logging.getLogger("rowbell.listener")
REFRESH_SECONDS = 10.0


class Command(BaseCommand):
    help = "Run the LISTEN/NOTIFY listener (a Procfile process)."

    def handle(self, *args, **options):
        stopping = []
        signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
        signal.signal(signal.SIGINT, lambda *_: stopping.append(True))
        selector = selectors.DefaultSelector()
        listening: dict = {}  # connection id -> psycopg connection
        refreshed = 0.0
        self.stdout.write("Listener started.")
        while not stopping:
            if time.monotonic() - refreshed > REFRESH_SECONDS:
                self._refresh(selector, listening)
                refreshed = time.monotonic()
            for key, _ in selector.select(timeout=1.0):
                connection_id, conn = key.data
                try:
                    woke = list(conn.notifies(timeout=0))
                except psycopg.Error:
                    logger.warning("Lost the listening connection to %s; it will be reopened.", connection_id)
                    self._drop(selector, listening, connection_id)
                    continue
                if woke:
                    self._read(connection_id)
        for connection_id in list(listening):
            self._drop(selector, listening, connection_id)
        self.stdout.write("Listener stopped.")

    def _read(self, connection_id):
        try:
            while (event_log_poll(connection_id=connection_id) or 0) >= POLL_BATCH:
                pass
        except DatabaseError:
            logger.warning("Cannot reach the service database; retrying.", exc_info=True)
            close_old_connections()

    def _refresh(self, selector, listening):
        try:
            close_old_connections()
            wanted = {c.id: c for c in Connection.objects.filter(capture_installed_at__isnull=False)}
        except DatabaseError:
            logger.warning("Cannot reach the service database; retrying.", exc_info=True)
            return
        for connection_id in set(listening) - set(wanted):
            self._drop(selector, listening, connection_id)
        for connection_id, connection in wanted.items():
            if connection_id in listening:
                continue
            try:
                conn = customer_connect(connection)
                conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(NOTIFY_CHANNEL)))
            except psycopg.Error as exc:
                logger.warning("Cannot listen on %s: %s", connection.name, str(exc).strip().splitlines()[0])
                continue
            listening[connection_id] = conn
            selector.register(conn.fileno(), selectors.EVENT_READ, (connection_id, conn))
            self._read(connection_id)  # whatever arrived while nobody was listening

    def _drop(self, selector, listening, connection_id):
        conn = listening.pop(connection_id, None)
        if conn is None:
            return
        try:
            selector.unregister(conn.fileno())
        except (KeyError, ValueError, OSError):
            pass
        conn.close()
