"""Reading the rows an event names, by key, when a run starts (and again while a run waits on a
condition): steps see them as they are now, not as they were when the event was logged."""

from __future__ import annotations

import psycopg
from django.conf import settings
from psycopg import sql

from apps.core import exactjson

from .customer import customer_session
from .names import table_parse

# The key columns' types, a domain replaced by its base (what sources record as `key_types`), as
# format_type prints them; run with only pg_catalog on the search path, so any other schema is named.
KEY_TYPES = """
WITH RECURSIVE k(name, type, depth) AS (
    SELECT a.attname, a.atttypid, 0 FROM pg_attribute a
    WHERE a.attrelid = %(table)s::regclass AND a.attnum > 0 AND NOT a.attisdropped AND a.attname = ANY(%(columns)s)
    UNION ALL
    SELECT k.name, t.typbasetype, k.depth + 1 FROM k JOIN pg_type t ON t.oid = k.type
    WHERE t.typtype = 'd' AND k.depth < 32
)
SELECT DISTINCT ON (name) name, format_type(type, -1) FROM k ORDER BY name, depth DESC
"""


def rows_read(*, connection, rows_from: dict, ids: list) -> tuple[list[dict], list]:
    """Return (the rows found, as JSON objects in the order of `ids`; the ids not found, i.e. deleted).

    At most ROWBELL_ROWS_PER_RUN ids are read. Keys are single columns (ids are values) or composite
    (ids are lists of values, in key order). Raises psycopg.Error if the database cannot be read, or if an
    id is not a value of its column's type; InsufficientPrivilege names the GRANT that fixes it.
    """
    ids = ids[: settings.ROWBELL_ROWS_PER_RUN]
    found = rows_read_indexed(connection=connection, rows_from=rows_from, ids=ids)
    rows = [found[i] for i in range(len(ids)) if i in found]
    return rows, [original for i, original in enumerate(ids) if i not in found]


def rows_read_indexed(*, connection, rows_from: dict, ids: list) -> dict[int, dict]:
    """The rows of `ids` that exist, by their position in `ids`: {index: row as a JSON object}. One query,
    however many ids (the caller bounds them). Keys and errors as rows_read."""
    width = len(rows_from["key"])
    # An id of another shape than the key (a value for a composite key, or a list of another length)
    # names no row.
    wanted = [
        i for i, original in enumerate(ids) if width == 1 or (isinstance(original, list) and len(original) == width)
    ]
    if not wanted:
        return {}
    with customer_session(connection) as conn, conn.transaction():
        # Type names are resolved as they were printed (only pg_catalog on the path), whatever the
        # search_path of Rowbell's user in the customer database.
        conn.execute("SET LOCAL search_path = pg_catalog")
        types = rows_from.get("key_types") or {}
        if any(column not in types for column in rows_from["key"]):  # saved before key types were recorded
            # A column gone since (renamed by a migration) stays unknown: PostgreSQL then names it.
            types = {**dict.fromkeys(rows_from["key"], "text"), **key_types_read(conn, rows_from=rows_from)}
        query, params = rows_query(rows_from=rows_from, key_types=types, ids=[ids[i] for i in wanted])
        try:
            return {wanted[n]: row for n, row in conn.execute(query, params)}
        except psycopg.errors.InsufficientPrivilege as exc:
            # Say what fixes it, as the connection checks do.
            schema, table = table_parse(rows_from["table"])
            grant = (
                sql.SQL("GRANT SELECT ON TABLE {} TO {};")
                .format(sql.Identifier(schema, table), sql.Identifier(connection.user))
                .as_string(None)
            )
            raise psycopg.errors.InsufficientPrivilege(f"{str(exc).strip().splitlines()[0]}: run {grant}") from exc


def key_types_read(conn, *, rows_from: dict) -> dict[str, str]:
    """The key columns' types, read from the customer's catalog, in the form sources record them."""
    schema, table = table_parse(rows_from["table"])
    return dict(
        conn.execute(
            KEY_TYPES,
            {"table": sql.Identifier(schema or "public", table).as_string(conn), "columns": list(rows_from["key"])},
        ).fetchall()
    )


def rows_query(*, rows_from: dict, key_types: dict[str, str], ids: list) -> tuple[sql.Composed, list[str | None]]:
    """(query, parameters) that read the rows of `ids` as (index in `ids`, row as JSON).

    Each id becomes a row of VALUES cast to the key's own types and joined on the key: compared with the
    type's equality (a timestamptz is the same instant however its text was spelled, a numeric the same
    number whatever its scale), and the primary-key index finds the rows. Casts are from the id's JSON
    text, so every digit reaches the type's input function. Needs only pg_catalog on the search path.
    """
    schema, table = table_parse(rows_from["table"])
    key = list(rows_from["key"])
    casts = sql.SQL(", ").join(sql.SQL("CAST(%s AS {})").format(sql.SQL(key_types[c])) for c in key)
    values = sql.SQL(", ").join(sql.SQL("({}, {})").format(sql.Literal(i), casts) for i in range(len(ids)))
    params = [key_text(v) for original in ids for v in (original if len(key) > 1 else [original])]
    query = sql.SQL(
        "SELECT v.i, to_jsonb(t) FROM (VALUES {values}) AS v(i, {keys}) JOIN {table} AS t ON {join}"
    ).format(
        values=values,
        table=sql.Identifier(schema or "public", table),
        keys=sql.SQL(", ").join(sql.Identifier(f"k{n}") for n in range(len(key))),
        join=sql.SQL(" AND ").join(
            sql.SQL("{} = {}").format(sql.Identifier("t", c), sql.Identifier("v", f"k{n}")) for n, c in enumerate(key)
        ),
    )
    return query, params


def key_text(value) -> str | None:
    """A key value as the text its type's input function reads: a JSON string as it is, anything else as
    JSON (a number with every digit, true/false, an object for a jsonb key)."""
    if value is None or isinstance(value, str):
        return value
    return exactjson.dumps(value)
