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
from dataclasses import dataclass

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
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None) if isinstance(info[4][0], str)}
    except socket.gaierror:
        addresses = set()
    return addresses, int(cfg.get("PORT") or 5432), cfg["NAME"]


# A server's identity is pg_control_system()'s system identifier (PostgreSQL 9.6+, executable by any role
# unless revoked; a streaming replica shares it, and is Rowbell's database too). Where it is revoked for the
# role, the postmaster's start time stands in: two servers share it only by a coincidence of microseconds.
# One statement reads the lot, so that a connect (the pick-up poll path makes them) pays one round trip for
# it, two where the function is revoked: PostgreSQL checks EXECUTE when it starts a statement, so no CASE
# can keep a revoked function from failing the statement that names it. The start time is read as
# microseconds since the epoch, which neither side's TimeZone nor DateStyle changes; names are
# schema-qualified, so that a role's search_path cannot stand another function in.
_STARTED_AND_OID = """(EXTRACT(epoch FROM pg_catalog.pg_postmaster_start_time()) * 1000000)::bigint,
       (SELECT oid::bigint FROM pg_catalog.pg_database WHERE datname = pg_catalog.current_database())"""
_IDENTITY = f"SELECT s.system_identifier::text, {_STARTED_AND_OID} FROM pg_catalog.pg_control_system() AS s"
_IDENTITY_WITHOUT_SYSTEM = f"SELECT NULL::text, {_STARTED_AND_OID}"
_SYSTEM_READABLE = "SELECT pg_catalog.has_function_privilege('pg_catalog.pg_control_system()', 'EXECUTE')"


@dataclass(frozen=True)
class _Identity:
    system: str | None  # None where pg_control_system() is revoked for the role
    started: int  # the postmaster's start time, microseconds since the epoch
    oid: int


_own_identity: dict[tuple, _Identity] = {}


def _service_identity(*, cached: bool) -> _Identity:
    """The service database's identity. With `cached`, one read before is returned if it holds the system
    identifier, which lasts as long as the server; the start time changes when the server restarts, so an
    identity without a system identifier is never kept (a long-running worker would compare a customer's
    server with the service's start time before the restart, and let the service's database through).
    Cached per database settings (tests create a database of their own)."""
    cfg = settings.DATABASES["default"]
    key = (cfg.get("HOST"), cfg.get("PORT"), cfg["NAME"])
    if cached and key in _own_identity:
        return _own_identity[key]
    with connections["default"].cursor() as cursor:
        # Asked first: a refused call would break the transaction the caller may be in.
        cursor.execute(_SYSTEM_READABLE)
        cursor.execute(_IDENTITY if cursor.fetchone()[0] else _IDENTITY_WITHOUT_SYSTEM)
        found = _Identity(*cursor.fetchone())
    if found.system is not None:
        _own_identity[key] = found
    return found


def _is_service_database(found: _Identity) -> bool:
    """Whether `found` (a customer connection's identity) is the service database's: the same server and
    the same database (its oid). Another database on the same server is a customer's like any other.

    1. Both sides read the system identifier: compare it (the service's may be cached: it is stable).
    2. Otherwise compare the start times, the service's read now: once the service database has
       restarted, a start time read before would take the service's own database for another.
    """
    if found.system is not None:
        own = _service_identity(cached=True)
        if own.system is not None:
            return (found.system, found.oid) == (own.system, own.oid)
        # Revoked for the service's role: never cached, so `own` was read just now.
    else:
        own = _service_identity(cached=False)
    return (found.started, found.oid) == (own.started, own.oid)


def own_database_refuse(conn: psycopg.Connection) -> None:
    """Close `conn` and raise OwnDatabaseRefused if it reached Rowbell's own database (_is_service_database).
    One round trip on `conn` (two where pg_control_system() is revoked), in autocommit whatever its mode,
    so that it leaves no transaction open and needs no rollback. Any error closes `conn` and is raised."""
    try:
        autocommit = conn.autocommit
        conn.autocommit = True  # a fresh connection is idle: set without a round trip
        try:
            try:
                row = conn.execute(_IDENTITY).fetchone()
            except psycopg.errors.InsufficientPrivilege:
                row = conn.execute(_IDENTITY_WITHOUT_SYSTEM).fetchone()
        finally:
            conn.autocommit = autocommit
        assert row is not None  # the identity query returns one row
        own = _is_service_database(_Identity(*row))
    except BaseException:
        conn.close()
        raise
    if own:
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
    addresses = [info[4][0] for info in infos if isinstance(info[4][0], str)]  # IPv4 and IPv6: text
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
        host=connection.host,
        hostaddr=address,
        port=connection.port,
        dbname=connection.database,
        user=connection.user,
        password=connection.password or None,
        sslmode=connection.sslmode,
        autocommit=autocommit,
        connect_timeout=settings.ROWBELL_CUSTOMER_CONNECT_TIMEOUT,
        application_name=APPLICATION_NAME,
        # UTC: timestamps Rowbell reads as JSON (rows, backfilled keys) are spelled the same whatever the
        # database's or the role's TimeZone setting (a key spelled another way would be another run's cause).
        options=f"-c statement_timeout={int(settings.ROWBELL_CUSTOMER_STATEMENT_TIMEOUT * 1000)} -c TimeZone=UTC",
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
    fingerprint = (
        connection.host,
        connection.port,
        connection.database,
        connection.user,
        connection.password,
        connection.sslmode,
    )
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
