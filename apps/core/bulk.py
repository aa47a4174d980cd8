"""Bulk inserts for the hot paths: many rows in one statement and one parameter.

Django's bulk_create binds every value as its own parameter, and adapting tens of thousands of them is
most of its cost at delivery rates. Here the rows travel as one JSON document (encoded by the C JSON
encoder) that PostgreSQL expands into rows of the table's own type (jsonb_populate_record): one
statement, one parameter, rows inserted in the order given. A Decimal is written as a number with its
digits (exactjson), as the JSON fields that hold row keys need.
"""

from __future__ import annotations

from collections.abc import Hashable
from datetime import datetime
from functools import cache
from typing import cast
from uuid import UUID

from django.core.serializers.json import DjangoJSONEncoder
from django.db import connection, models

from apps.core import exactjson

_django_default = DjangoJSONEncoder().default


def _default(value):
    # Timestamps and UUIDs are most of what is not JSON already (timestamps keep their microseconds); the
    # rest goes through Django's encoder.
    kind = type(value)
    if kind is datetime:
        return value.isoformat()
    if kind is UUID:
        return str(value)
    return _django_default(value)


@cache
def _statement(
    model: type[models.Model], columns: tuple[str, ...], returning: tuple[str, ...], on_conflict: str
) -> str:
    quote = connection.ops.quote_name
    table = quote(model._meta.db_table)
    sql = (
        f"INSERT INTO {table} ({', '.join(quote(c) for c in columns)}) "
        f"SELECT {', '.join('r.' + quote(c) for c in columns)} "
        f"FROM jsonb_array_elements(%s::jsonb) WITH ORDINALITY AS e(doc, ord), "
        f"jsonb_populate_record(NULL::{table}, e.doc) AS r ORDER BY e.ord"
    )
    if on_conflict:
        sql += f" {on_conflict}"
    return sql + (f" RETURNING {', '.join(quote(c) for c in returning)}" if returning else "")


def insert_rows(
    model: type[models.Model], rows: list[dict], *, returning: str | tuple[str, ...] = "", on_conflict: str = ""
) -> list:
    """Insert `rows` (dicts keyed by column name, all with the same keys) into the model's table.

    Returns, for each inserted row in order, its `returning` column (a name) or a tuple of columns (a
    tuple of names). `on_conflict` is a fixed `ON CONFLICT ...` clause (no user input); rows it skips
    return nothing.
    """
    if not rows:
        return []
    columns = tuple(rows[0])
    names = (returning,) if isinstance(returning, str) and returning else tuple(returning or ())
    with connection.cursor() as cursor:
        # A class is hashable, but mypy does not see it for a type[Any] (here Django's Model): python/mypy#11470.
        cursor.execute(
            _statement(cast(Hashable, model), columns, names, on_conflict),
            [exactjson.dumps(rows, default=_default, separators=(",", ":"))],
        )
        if not names:
            return []
        return (
            [r[0] for r in cursor.fetchall()] if isinstance(returning, str) else [tuple(r) for r in cursor.fetchall()]
        )
