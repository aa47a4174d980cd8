"""The one place that opens connections to customer databases.

A product key chooses the host, so the address is checked before every connect and the socket goes to
the checked address (libpq's hostaddr; the host name still serves TLS verification): Unix sockets,
loopback, link-local, unspecified, multicast and reserved addresses are refused unless
ROWBELL_CONNECTION_ALLOW opens them, and Rowbell's own database is always refused. Private networks are
allowed: a self-hosted Rowbell usually reaches its customers' databases there.
"""

from __future__ import annotations

import socket
import threading
import time
from contextlib import contextmanager

import psycopg
from django.conf import settings
from psycopg.types.json import set_json_loads

from apps.core import exactjson
from apps.core.addresses import address_allowed, networks

APPLICATION_NAME = "rowbell"

_REFUSED = networks(
    "0.0.0.0/8", "127.0.0.0/8", "169.254.0.0/16", "224.0.0.0/4", "240.0.0.0/4", "255.255.255.255/32",
    "::/128", "::1/128", "fe80::/10", "ff00::/8",
)


def failure_reason(exc: Exception) -> str:
    """The useful line of a database error (psycopg puts hints on the lines after it)."""
    text = str(exc).strip()
    return text.splitlines()[0][:500] if text else exc.__class__.__name__


class ConnectionRefused(Exception):
    """The host may not be connected to; the message says why."""


def _address_ok(ip: str) -> bool:
    return address_allowed(ip, refused=_REFUSED, allowed=settings.ROWBELL_CONNECTION_ALLOW)


def _service_database() -> tuple[set[str], int, str]:
    cfg = settings.DATABASES["default"]
    host = cfg.get("HOST") or "127.0.0.1"
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None)}
    except socket.gaierror:
        addresses = set()
    return addresses, int(cfg.get("PORT") or 5432), cfg["NAME"]


def connection_address(connection) -> str:
    """The checked address to connect to; raises ConnectionRefused."""
    host = connection.host
    if not host or host.startswith("/") or "," in host:
        raise ConnectionRefused("Give one host name or address (Unix sockets and host lists are not allowed).")
    try:
        infos = socket.getaddrinfo(host, connection.port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise ConnectionRefused(f"Cannot resolve {host}: {exc.strerror}.") from exc
    addresses = [info[4][0] for info in infos]
    own, own_port, own_name = _service_database()
    if connection.port == own_port and connection.database == own_name and own & set(addresses):
        raise ConnectionRefused("This is Rowbell's own database.")
    allowed = [a for a in addresses if _address_ok(a)]
    if not allowed:
        raise ConnectionRefused(f"{host} resolves to {addresses[0]}, a loopback, link-local or reserved address.")
    return allowed[0]


def customer_connect(connection, *, autocommit: bool = True) -> psycopg.Connection:
    """Open a connection to a customer database, bounded in time on connect and per statement."""
    try:
        address = connection_address(connection)
    except ConnectionRefused as exc:
        # Raised as a connection failure: every caller already reports those by name.
        raise psycopg.OperationalError(f"connection refused by Rowbell: {exc}") from exc
    conn = psycopg.connect(
        host=connection.host, hostaddr=address, port=connection.port, dbname=connection.database,
        user=connection.user, password=connection.password or None, sslmode=connection.sslmode,
        autocommit=autocommit, connect_timeout=settings.ROWBELL_CUSTOMER_CONNECT_TIMEOUT,
        application_name=APPLICATION_NAME,
        options=f"-c statement_timeout={int(settings.ROWBELL_CUSTOMER_STATEMENT_TIMEOUT * 1000)}",
    )
    # JSON read here (the event log's ids, rows read by key) keeps its numbers exact: a numeric key read
    # as a float would name another row.
    set_json_loads(exactjson.loads, conn)
    return conn


_sessions = threading.local()
MAX_SESSIONS = 32
IDLE_CHECK_SECONDS = 30.0


def _alive(cached) -> bool:
    """A connection idle for a while may have been closed by the server or a proxy: check it before use,
    so that its first use does not fail (a poll error, a run's retry spent)."""
    if time.monotonic() - cached[2][0] < IDLE_CHECK_SECONDS:
        return True
    try:
        cached[1].execute("SELECT 1")
        return True
    except psycopg.Error:
        return False


def customer_sessions_close() -> None:
    """Close the connections this thread keeps open."""
    for _, conn, _ in getattr(_sessions, "by_connection", {}).values():
        conn.close()
    _sessions.by_connection = {}


@contextmanager
def customer_session(connection):
    """A customer-database connection kept open between uses by this thread (the pollers read every
    50 ms: connecting each time would cost a server process each time). Autocommit. Reopened when the
    connection's settings change or after any error, which is re-raised."""
    cache = getattr(_sessions, "by_connection", None)
    if cache is None:
        cache = _sessions.by_connection = {}
    fingerprint = (connection.host, connection.port, connection.database, connection.user, connection.password,
                   connection.sslmode)
    cached = cache.get(connection.id)
    if cached is not None and (cached[0] != fingerprint or cached[1].closed or not _alive(cached)):
        cache.pop(connection.id)[1].close()
        cached = None
    if cached is None:
        while len(cache) >= MAX_SESSIONS:  # the oldest goes: a process keeps a bounded number open
            cache.pop(next(iter(cache)))[1].close()
        cached = cache[connection.id] = (fingerprint, customer_connect(connection), [time.monotonic()])
    try:
        yield cached[1]
        cached[2][0] = time.monotonic()
    except psycopg.Error:
        cache.pop(connection.id, None)
        cached[1].close()
        raise
