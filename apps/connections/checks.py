"""Itemized checks of a customer database connection: what works, what is missing, and why."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

import psycopg
from psycopg import sql

from .customer import OWN_DATABASE, ConnectionRefused, OwnDatabaseRefused, connection_address, customer_connect
from .names import table_parse

_FATAL = re.compile(r"FATAL:\s+(.*)")
_AUTH_HINTS = (
    "password authentication failed",
    "does not exist",
    "no pg_hba.conf entry",
    "authentication",
    "not permitted to log in",
)


@dataclass
class Check:
    name: str
    ok: bool
    detail: str

    def as_dict(self) -> dict:
        return asdict(self)


def _skip(name: str) -> Check:
    return Check(name, False, "Not checked: an earlier check failed.")


def _connect_failure(exc: psycopg.OperationalError, tables: list[str]) -> list[Check]:
    message = str(exc).strip()
    fatal = _FATAL.search(message)
    later = [_skip("schema")] + [_skip(f"table {t}") for t in tables]
    if not fatal:  # nothing answered: refused, timed out, unknown host
        reason = message.splitlines()[0].removeprefix("connection failed: ")
        return [Check("reachable", False, reason), _skip("authenticated")] + later
    reason = fatal.group(1).strip()
    reachable = Check("reachable", True, "The server answered.")
    if re.search(r'database ".*" does not exist', reason):
        return [reachable, Check("database", False, reason)] + later
    return [reachable, Check("authenticated", False, reason)] + later


def connection_check(*, connection, tables: list[str] | None = None) -> list[Check]:
    """Connect and report, by name: reachable, authenticated, schema (owns it or may create it), and for
    each watched table SELECT and TRIGGER privileges. Never raises for a customer-side problem."""
    tables = list(tables or [])
    try:
        connection_address(connection)
    except ConnectionRefused as exc:
        return [Check("allowed", False, str(exc)), _skip("reachable"), _skip("authenticated"), _skip("schema")] + [
            _skip(f"table {t}") for t in tables
        ]
    try:
        conn = customer_connect(connection)
    except OwnDatabaseRefused:
        return [
            Check("allowed", False, OWN_DATABASE),
            Check("reachable", True, "The server answered."),
            _skip("authenticated"),
            _skip("schema"),
        ] + [_skip(f"table {t}") for t in tables]
    except psycopg.OperationalError as exc:
        return _connect_failure(exc, tables)
    checks = [
        Check("reachable", True, "The server answered."),
        Check("authenticated", True, f"Logged in as {connection.user}."),
    ]
    with conn:
        owner = conn.execute(
            "SELECT pg_get_userbyid(nspowner) FROM pg_namespace WHERE nspname = %s", [connection.schema]
        ).fetchone()
        if owner is None:
            row = conn.execute("SELECT has_database_privilege(current_user, current_database(), 'CREATE')").fetchone()
            assert row is not None  # a SELECT without FROM returns one row
            can_create = row[0]
            checks.append(
                Check(
                    "schema",
                    can_create,
                    f"Schema {connection.schema} does not exist yet; {connection.user} may create it."
                    if can_create
                    else f"Schema {connection.schema} does not exist and {connection.user} may not "
                    f"create it: GRANT CREATE ON DATABASE {connection.database} TO {connection.user}.",
                )
            )
        elif owner[0] == connection.user:
            checks.append(Check("schema", True, f"{connection.user} owns schema {connection.schema}."))
        else:
            checks.append(
                Check("schema", False, f"Schema {connection.schema} belongs to {owner[0]}, not to {connection.user}.")
            )
        for table in tables:
            checks.append(_table_check(conn, table))
    return checks


PRIVILEGES = """
SELECT n.nspname, c.relname, has_table_privilege(c.oid, 'SELECT'), has_table_privilege(c.oid, 'TRIGGER'),
       c.relkind = 'p'
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.oid = %(oid)s OR c.oid IN (SELECT relid FROM pg_partition_tree(%(oid)s))
ORDER BY c.oid <> %(oid)s, n.nspname, c.relname
"""


def grant_statement(privileges: list[str], tables: list[tuple[str, str]], user: str) -> str:
    """`GRANT <privileges> ON TABLE <tables> TO <user>;` with every name quoted as PostgreSQL needs it."""
    return (
        sql.SQL("GRANT {} ON TABLE {} TO {};")
        .format(
            sql.SQL(", ").join(map(sql.SQL, privileges)),
            sql.SQL(", ").join(sql.Identifier(*t) for t in tables),
            sql.Identifier(user),
        )
        .as_string(None)
    )


def _table_check(conn: psycopg.Connection, table: str) -> Check:
    schema, relname = table_parse(table)
    return table_privileges_check(conn, schema=schema, table=relname, name=f"table {table}")


def table_privileges_check(conn: psycopg.Connection, *, schema: str, table: str, name: str) -> Check:
    """SELECT and TRIGGER on the table and, for a partitioned table, on each partition (a statement that
    names a partition fires only the partition's triggers, which Rowbell installs too); when one is missing,
    the detail gives the GRANT that fixes it."""
    row = conn.execute(
        """
        SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = %s AND c.relname = %s AND c.relkind IN ('r', 'p')
        """,
        [schema, table],
    ).fetchone()
    if row is None:
        return Check(name, False, f"No table {schema}.{table} (or no USAGE on schema {schema}).")
    lacking: dict[str, list] = {}
    partitions = 0
    for nspname, rel, can_select, can_trigger, _ in conn.execute(PRIVILEGES, {"oid": row[0]}).fetchall():
        partitions += (nspname, rel) != (schema, table)
        for privilege, granted in (("SELECT", can_select), ("TRIGGER", can_trigger)):
            if not granted:
                lacking.setdefault(privilege, []).append((nspname, rel))
    if lacking:
        tables = sorted({t for ts in lacking.values() for t in ts})
        grant = grant_statement(sorted(lacking), tables, conn.info.user)
        return Check(name, False, f"Missing {' and '.join(sorted(lacking))} privilege: {grant}")
    return Check(
        name, True, "SELECT and TRIGGER granted" + (f" (and on its {partitions} partitions)." if partitions else ".")
    )
