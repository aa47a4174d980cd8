"""The one place that opens connections to customer databases.

A product key chooses the host, so the address is checked before every connect and the socket goes to
the checked address (libpq's hostaddr; the host name still serves TLS verification): Unix sockets,
loopback, link-local, unspecified, multicast and reserved addresses are refused unless
ROWBELL_CONNECTION_ALLOW opens them, whatever their spelling (apps.core.destinations: `127.1`,
`::ffff:127.0.0.1`, `[::127.0.0.1]` and the like are judged as the addresses they are). Private networks
are allowed: a self-hosted Rowbell usually reaches its customers' databases there.

Rowbell's own database is always refused, by what it is rather than by how its address is written: after
connecting, the server's system identifier and the database's oid are compared with the service
database's (own_database_refuse). A loopback alias, a NAT, a proxy or a replica cannot dress it up as a
customer's database, so `/tables`, row reads, captures and polls, which all connect here, never reach it.
"""

from __future__ import annotations

import socket
import threading
import time
from contextlib import contextmanager

import psycopg
from django.conf import settings
from django.db import connections
from psycopg.types.json import set_json_loads

from apps.core import destinations, exactjson

APPLICATION_NAME = "rowbell"
OWN_DATABASE = "This is Rowbell's own database."


def failure_reason(exc: Exception) -> str:
    """The useful line of a database error (psycopg puts hints on the lines after it)."""
    text = str(exc).strip()
    return text.splitlines()[0][:500] if text else exc.__class__.__name__


class ConnectionRefused(Exception):
    """The host may not be connected to; the message says why."""


class OwnDatabaseRefused(psycopg.OperationalError):
    """The database connected to is Rowbell's own: the connection was closed before any use. An
    OperationalError, as every caller already reports those by name."""


def _service_database() -> tuple[set[str], int, str]:
    cfg = settings.DATABASES["default"]
    host = cfg.get("HOST") or "127.0.0.1"
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None)}
    except socket.gaierror:
        addresses = set()
    return addresses, int(cfg.get("PORT") or 5432), cfg["NAME"]


# The server's identity is pg_control_system()'s system identifier (PostgreSQL 9.6+, executable by any role
# unless revoked; a streaming replica shares it, and is Rowbell's database too). Where it is revoked, the
# postmaster's start time stands in: two servers share it only by a coincidence of microseconds.
_SERVER = "SELECT system_identifier::text FROM pg_control_system()"
_STARTED = "SELECT pg_postmaster_start_time()::text"
_DATABASE = "SELECT oid::bigint FROM pg_database WHERE datname = current_database()"

_own_identity: dict[tuple, dict] = {}
_own_lock = threading.Lock()


def _service_identity() -> dict:
    """The service database's identity ({"system": ..., "started": ..., "oid": ...}), read once per
    process and database settings (tests create a database of their own)."""
    cfg = settings.DATABASES["default"]
    key = (cfg.get("HOST"), cfg.get("PORT"), cfg["NAME"])
    with _own_lock:
        if key not in _own_identity:
            with connections["default"].cursor() as cursor:
                found = {}
                for name, query in (("system", _SERVER), ("started", _STARTED), ("oid", _DATABASE)):
                    cursor.execute(query)
                    found[name] = cursor.fetchone()[0]
            _own_identity[key] = found
        return _own_identity[key]


def own_database_refuse(conn: psycopg.Connection) -> None:
    """Close `conn` and raise OwnDatabaseRefused if it reached Rowbell's own database: the same server
    (pg_control_system()'s system_identifier, or where that is revoked the postmaster's start time) and
    the same database (its oid). Another database on the same server is a customer's like any other.
    Leaves no transaction open. Any error closes `conn` and is raised."""
    try:
        own = _service_identity()
        try:
            kind, server = "system", conn.execute(_SERVER).fetchone()[0]
        except psycopg.errors.InsufficientPrivilege:
            if not conn.autocommit:
                conn.rollback()
            kind, server = "started", conn.execute(_STARTED).fetchone()[0]
        oid = conn.execute(_DATABASE).fetchone()[0]
        if not conn.autocommit:
            conn.rollback()
    except BaseException:
        conn.close()
        raise
    if server == own[kind] and oid == own["oid"]:
        conn.close()
        raise OwnDatabaseRefused(f"connection refused by Rowbell: {OWN_DATABASE}")


def connection_address(connection) -> str:
    """The checked address to connect to; raises ConnectionRefused.

    1. One host: no Unix socket, no host list.
    2. The host as the socket layer reads it, if it is an IP literal in any spelling, is judged
       (destinations.host_check); then every address it resolves to (destinations.resolved_check).
    3. An address of the service database with its port and name is refused at once, before any
       credentials are sent; customer_connect then refuses it by identity, however it was reached.
    """
    host = connection.host
    if not host or host.startswith("/") or "," in host:
        raise ConnectionRefused("Give one host name or address (Unix sockets and host lists are not allowed).")
    try:
        destinations.host_check(host, policy=destinations.CONNECTION)
    except destinations.DestinationRefused as exc:
        raise ConnectionRefused(exc.message) from None
    try:
        infos = socket.getaddrinfo(host, connection.port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise ConnectionRefused(f"Cannot resolve {host}: {getattr(exc, 'strerror', None) or exc}.") from exc
    addresses = [info[4][0] for info in infos]
    own, own_port, own_name = _service_database()
    if connection.port == own_port and connection.database == own_name and own & set(addresses):
        raise ConnectionRefused(OWN_DATABASE)
    try:
        return destinations.resolved_check(host, addresses, policy=destinations.CONNECTION)[0]
    except destinations.DestinationRefused as exc:
        raise ConnectionRefused(exc.message) from None


def customer_connect(connection, *, autocommit: bool = True) -> psycopg.Connection:
    """Open a connection to a customer database, bounded in time on connect and per statement. Raises
    psycopg.OperationalError if it cannot be opened or may not be used (OwnDatabaseRefused for
    Rowbell's own database)."""
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
    own_database_refuse(conn)
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
