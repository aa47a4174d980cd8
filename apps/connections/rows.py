"""Reading the rows an event names, by key, when a run starts (and again while a run waits on a
condition): steps see them as they are now, not as they were when the event was logged."""

from __future__ import annotations

from django.conf import settings
from psycopg import sql

from .customer import customer_session


def rows_read(*, connection, rows_from: dict, ids: list) -> tuple[list[dict], list]:
    """Return (the rows found, as JSON objects in the order of `ids`; the ids not found, i.e. deleted).

    At most ROWBELL_ROWS_PER_RUN ids are read. Keys are single columns (ids are values) or composite
    (ids are lists of values, in key order). Raises psycopg.Error if the database cannot be read.
    """
    ids = ids[:settings.ROWBELL_ROWS_PER_RUN]
    if not ids:
        return [], []
    schema, _, table = rows_from["table"].rpartition(".")
    key = rows_from["key"]
    keys = [tuple(i) if isinstance(i, list) else (i,) for i in ids]
    # Keys are compared as text: the ids come from JSON, the columns may be of any type.
    wanted = sql.SQL(", ").join(
        sql.SQL("({})").format(sql.SQL(", ").join(sql.Literal(str(v)) for v in k)) for k in keys)
    query = sql.SQL("SELECT to_jsonb(t) FROM {table} t WHERE ({text_columns}) IN ({wanted})").format(
        table=sql.Identifier(schema or "public", table), wanted=wanted,
        text_columns=sql.SQL(", ").join(sql.SQL("{}::text").format(sql.Identifier("t", c)) for c in key))
    with customer_session(connection) as conn:
        found = {tuple(_text(row[c]) for c in key): row for (row,) in conn.execute(query)}
    rows, missing = [], []
    for original, k in zip(ids, keys):
        row = found.get(tuple(_text(v) for v in k))
        if row is None:
            missing.append(original)
        else:
            rows.append(row)
    return rows, missing


def _text(value) -> str:
    """A key value as PostgreSQL prints it as text."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
