"""Rows related to a changed row, and the columns a trigger reads from them, checked against the customer's
catalog when a workflow is saved: `orders.customer_id` -> `customers.id`, `customer.email`.

What a run later reads of them goes through apps.connections.rows (by key, with the connection's own user).
"""

from __future__ import annotations

import psycopg
from psycopg import sql

from .customer import customer_session
from .names import did_you_mean, table_parse

# Columns of a table (by its quoted name; none when it does not exist), with whether the user may read it.
_COLUMNS = """
SELECT a.attname, pg_catalog.format_type(a.atttypid, a.atttypmod), pg_catalog.has_table_privilege(c.oid, 'SELECT')
FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
WHERE c.oid = pg_catalog.to_regclass(%(table)s) AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
"""

# The column that a one-column foreign key from `child.column` references in `parent`.
_REFERENCED = """
SELECT af.attname
FROM pg_catalog.pg_constraint k
JOIN pg_catalog.pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = k.conkey[1]
JOIN pg_catalog.pg_attribute af ON af.attrelid = k.confrelid AND af.attnum = k.confkey[1]
WHERE k.contype = 'f' AND k.conrelid = pg_catalog.to_regclass(%(child)s)
  AND k.confrelid = pg_catalog.to_regclass(%(parent)s) AND pg_catalog.array_length(k.conkey, 1) = 1
  AND a.attname = %(column)s
"""

# Whether a column alone is unique in its table (its primary key or a unique index on it alone, not partial):
# a key that could name several rows would pick one of them at random.
_UNIQUE = """
SELECT EXISTS (
    SELECT 1 FROM pg_catalog.pg_index i
    JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
    WHERE i.indrelid = pg_catalog.to_regclass(%(table)s) AND i.indisunique AND i.indnkeyatts = 1
      AND i.indpred IS NULL AND a.attname = %(column)s)
"""

# Whether a value of type `have` is always a value of type `want`: the same type, or one PostgreSQL converts
# implicitly (integer to bigint, varchar to text); text to bigint is not (its input function may refuse it).
_COMPARABLE = """
SELECT %(have)s::regtype = %(want)s::regtype OR EXISTS (
    SELECT 1 FROM pg_catalog.pg_cast
    WHERE castsource = %(have)s::regtype AND casttarget = %(want)s::regtype AND castcontext = 'i')
"""

# A table's one-column primary key.
_PRIMARY_KEY = """
SELECT a.attname
FROM pg_catalog.pg_constraint k
JOIN pg_catalog.pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = k.conkey[1]
WHERE k.contype = 'p' AND k.conrelid = pg_catalog.to_regclass(%(table)s) AND pg_catalog.array_length(k.conkey, 1) = 1
"""


def row_links_validate(
    *, connection, table: str, related: dict[str, dict], paths: dict[str, str]
) -> tuple[dict[str, dict], dict[str, list[str]]]:
    """Check a database trigger's related tables and the column paths it reads against the customer's catalog.

    `table` is the watched table (`schema.table`); `related` maps a name to {"table", "column", "key"?}
    (the changed row's `column` holds the related row's `key`); `paths` maps a field of the trigger
    (`recipient.email`, `organization`) to `row.<column>` or `<related name>.<column>`.

    Returns (related as stored, in the format's own terms with the key found: {name: {"table", "column",
    "key"}}, errors by
    field under the trigger: {"related.customer.key": [...], "recipient.email": [...]}). Raises psycopg.Error
    when the customer database cannot be read (the caller says it is unavailable).
    """
    errors: dict[str, list[str]] = {}
    stored: dict[str, dict] = {}
    with customer_session(connection) as conn, conn.transaction():
        conn.execute("SET LOCAL search_path = pg_catalog")
        columns = {"row": _columns(conn, table)}
        for name, link in related.items():
            here = f"related.{name}"
            try:
                schema, name_of_table = table_parse(link["table"])
            except ValueError as exc:
                errors.setdefault(f"{here}.table", []).append(str(exc))
                continue
            quoted = sql.Identifier(schema, name_of_table).as_string(conn)
            found = _columns(conn, quoted, exact=True)
            if found is None:
                errors.setdefault(f"{here}.table", []).append(
                    f"No table {schema}.{name_of_table} that the connection's user can see."
                )
                continue
            if found.get("\0privilege") is False:
                errors.setdefault(f"{here}.table", []).append(
                    f"The connection's user may not read {schema}.{name_of_table}: run "
                    f"GRANT SELECT ON TABLE {quoted} TO {sql.Identifier(connection.user).as_string(conn)};"
                )
                continue
            found.pop("\0privilege", None)
            if columns["row"] is not None and link["column"] not in columns["row"]:
                errors.setdefault(f"{here}.column", []).append(
                    f"No column '{link['column']}' in {table}.{did_you_mean(link['column'], columns['row'])}"
                )
                continue
            key = link.get("key") or _referenced(conn, table, quoted, link["column"]) or _primary_key(conn, quoted)
            if key is None:
                errors.setdefault(f"{here}.key", []).append(
                    f"{schema}.{name_of_table} has no one-column primary key and '{link['column']}' is not a foreign "
                    "key to it: name the key column."
                )
                continue
            if key not in found:
                errors.setdefault(f"{here}.key", []).append(
                    f"No column '{key}' in {schema}.{name_of_table}.{did_you_mean(key, found)}"
                )
                continue
            if not conn.execute(_UNIQUE, {"table": quoted, "column": key}).fetchone()[0]:
                errors.setdefault(f"{here}.key", []).append(
                    f"'{key}' is not unique in {schema}.{name_of_table} (no primary key or unique index on it alone): "
                    "a row could name several related rows. Name a unique column."
                )
                continue
            have, want = (columns["row"] or {}).get(link["column"]), found[key]
            if have and not conn.execute(_COMPARABLE, {"have": have, "want": want}).fetchone()[0]:
                errors.setdefault(f"{here}.column", []).append(
                    f"'{link['column']}' is {have} but {schema}.{name_of_table}.{key} is {want}: a value of one is not a "
                    "value of the other (a row holding 'abc' would name no row and fail its run). Name a column of "
                    "the key's type, or change one of the two types."
                )
                continue
            columns[name] = found
            stored[name] = {"table": f"{schema}.{name_of_table}", "column": link["column"], "key": key}
    for field, path in paths.items():
        root, _, column = path.partition(".")
        if root != "row" and root not in related:
            errors.setdefault(field, []).append(
                f"'{root}' is neither row nor a related table's name. Related tables: {', '.join(related) or 'none'}."
            )
        elif (known := columns.get(root)) is not None and column not in known:
            errors.setdefault(field, []).append(
                f"No column '{column}' in {stored.get(root, {}).get('table', table)}.{did_you_mean(column, known)}"
            )
    return stored, errors


def _columns(conn: psycopg.Connection, table: str, *, exact: bool = False) -> dict[str, str] | None:
    """{column: type} of `table` (quoted when `exact`, else as `schema.table` text), with the user's SELECT
    privilege under the key "\\0privilege"; None when there is no such table."""
    if not exact:
        schema, name = table_parse(table)
        table = sql.Identifier(schema, name).as_string(conn)
    try:
        with conn.transaction():  # a savepoint: the caller's transaction goes on after a refusal
            rows = conn.execute(_COLUMNS, {"table": table}).fetchall()
    except psycopg.errors.InsufficientPrivilege:  # no USAGE on its schema: it cannot be read either
        return {"\0privilege": False}  # type: ignore[dict-item]  # the privilege key holds a bool
    if not rows:
        return None
    return {**{name: type_ for name, type_, _ in rows}, "\0privilege": rows[0][2]}


def _referenced(conn: psycopg.Connection, child: str, parent: str, column: str) -> str | None:
    schema, name = table_parse(child)
    row = conn.execute(
        _REFERENCED, {"child": sql.Identifier(schema, name).as_string(conn), "parent": parent, "column": column}
    ).fetchone()
    return row[0] if row else None


def _primary_key(conn: psycopg.Connection, table: str) -> str | None:
    row = conn.execute(_PRIMARY_KEY, {"table": table}).fetchone()
    return row[0] if row else None


def related_drift(
    conn: psycopg.Connection,
    *,
    connection,
    tables: dict[tuple[str, str], list[str]],
    columns: dict[tuple[str, str], list[str]] | None = None,
) -> list[dict]:
    """Problems with what live workflows read by name (see drift.py for the shape): each related table
    {(schema.table, key column): [workflow keys]} must exist, keep its key column and stay readable by the
    connection's user; each column they read (`columns`, {(schema.table, column): [workflow keys]}: reference
    columns, recipient and organization paths) must still be there. Each problem names the workflows and ends
    with what to do."""
    problems = []
    for (table, column), workflows in (columns or {}).items():
        schema, name = table_parse(table)
        found = _columns(conn, sql.Identifier(schema, name).as_string(conn), exact=True)
        if found is None or found.get("\0privilege") is False or column in found:
            continue  # a table gone or unreadable is said once, below or by the capture's own drift
        problems.append(
            {
                "capture": "",
                "table": table,
                "kind": "missing_column",
                "detail": f"{table} has no column {column!r} any more: the workflows reading it ({', '.join(workflows)}) "
                f"fail their runs until their trigger names the column it became.{did_you_mean(column, found)}",
                "repairable": False,
                "workflows": workflows,
                "endpoints": [],
            }
        )
    for (table, key), workflows in tables.items():
        schema, name = table_parse(table)
        quoted = sql.Identifier(schema, name).as_string(conn)
        found = _columns(conn, quoted, exact=True)
        if found is None:
            kind, detail = "missing_table", f"The related table {table} no longer exists."
        elif found.get("\0privilege") is False:
            grant = f"GRANT SELECT ON TABLE {quoted} TO {sql.Identifier(connection.user).as_string(conn)};"
            kind, detail = "missing_grant", f"The connection's user may no longer read {table}: run {grant}"
        elif key not in found:
            kind, detail = "missing_column", f"The related table {table} has no column {key!r} any more."
        else:
            continue
        problems.append(
            {
                "capture": "",
                "table": table,
                "kind": kind,
                "detail": f"{detail} Workflows reading it: {', '.join(workflows)}.",
                "repairable": False,
                "workflows": workflows,
                "endpoints": [],
            }
        )
    return problems
