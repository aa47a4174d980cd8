"""The rows of a watched table that a backfill starts runs for: a predicate over its columns (the structured
conditions of apps.connections.conditions), read page by page in key order with the connection's own user."""

from __future__ import annotations

import psycopg
from psycopg import sql

from apps.core import exactjson
from apps.core.exceptions import InvalidInput

from .conditions import condition_columns, condition_sql, condition_validate
from .customer import customer_session
from .introspection import column_types, values_check
from .names import table_parse
from .rows import key_text, key_types_read


def backfill_keys(
    *, connection, rows_from: dict, where: dict | None, after=None, limit: int, count: bool = False
) -> tuple[list, int | None]:
    """(the keys of up to `limit` rows of `rows_from["table"]` matching `where`, after the key `after`, in key
    order; how many rows match in all, when `count`, else None).

    Keys are as events carry them: a value (a list of values for a composite key), in JSON with every digit.
    `where` is a structured condition over the table's columns, checked against their types (errors by path
    under `where`, raised as InvalidInput). Raises psycopg.Error when the customer database cannot be read.
    """
    schema, table = table_parse(rows_from["table"])
    key = list(rows_from["key"])
    with customer_session(connection) as conn, conn.transaction():
        try:
            named = sorted(condition_columns(where)) if where else []
        except (KeyError, TypeError, AttributeError):  # not a condition's shape: condition_validate says why
            named = []
        types = column_types(conn, schema=schema, table=table, columns=named) if named else {}
        conn.execute("SET LOCAL search_path = pg_catalog")
        if where:
            checks: list = []
            errors = condition_validate(where, columns=types, path="where", values=checks)
            errors = errors or values_check(conn, checks=checks, types=types)
            if errors:
                raise InvalidInput(
                    "The predicate does not fit the table.", fields={k: " ".join(v) for k, v in errors.items()}
                )
        key_types = rows_from.get("key_types") or {}
        if any(column not in key_types for column in key):
            key_types = {**dict.fromkeys(key, "text"), **key_types_read(conn, rows_from=rows_from)}
        predicate = condition_sql(where, "t", types) if where else sql.SQL("true")
        name = sql.Identifier(schema, table)
        columns = sql.SQL(", ").join(sql.Identifier("t", c) for c in key)
        params: list = []
        bound: sql.Composable = sql.SQL("true")
        if after is not None:
            values = after if len(key) > 1 else [after]
            if not isinstance(values, list) or len(values) != len(key):
                raise InvalidInput(f"A key of {len(key)} values, as `next` gave it.", field="after")
            bound = sql.SQL("({}) > ({})").format(
                columns,
                sql.SQL(", ").join(sql.SQL("CAST(%s AS {})").format(sql.SQL(key_types[c])) for c in key),
            )
            params = [key_text(v) for v in values]
            try:
                with conn.transaction():  # a savepoint: `after` alone, so that its refusal names it
                    conn.execute(
                        sql.SQL("SELECT {}").format(
                            sql.SQL(", ").join(sql.SQL("CAST(%s AS {})").format(sql.SQL(key_types[c])) for c in key)
                        ),
                        params,
                    )
            except psycopg.errors.DataError as exc:
                raise InvalidInput(
                    f"Not a key of {rows_from['table']}: {str(exc).strip().splitlines()[0]}", field="after"
                ) from None
        as_json = sql.SQL(", ").join(
            sql.SQL("pg_catalog.to_jsonb({})::text").format(sql.Identifier("t", c)) for c in key
        )
        query = sql.SQL(
            "SELECT {json} FROM {table} AS t WHERE {predicate} AND {bound} ORDER BY {columns} LIMIT %s"
        ).format(json=as_json, table=name, predicate=predicate, bound=bound, columns=columns)
        try:
            with conn.transaction():
                found = conn.execute(query, [*params, limit]).fetchall()
        except psycopg.errors.DataError as exc:  # a value of the condition its column's type cannot compare
            raise InvalidInput(
                f"A value of the condition does not fit its column: {str(exc).strip().splitlines()[0]}", field="where"
            ) from None
        keys = [[exactjson.loads(v) for v in row] if len(key) > 1 else exactjson.loads(row[0]) for row in found]
        total = None
        if count:
            total = conn.execute(
                sql.SQL("SELECT count(*) FROM {table} AS t WHERE {predicate}").format(table=name, predicate=predicate)
            ).fetchone()[0]
    return keys, total
