"""What the connection's user can see in the customer database: tables, columns, types, primary keys."""

from __future__ import annotations

from .customer import customer_connect

TABLES = """
SELECT n.nspname, c.relname, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
       COALESCE(a.attnum = ANY (pk.conkey), false), a.attnum
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
LEFT JOIN pg_constraint pk ON pk.conrelid = c.oid AND pk.contype = 'p'
WHERE c.relkind IN ('r', 'p')
  AND n.nspname NOT IN ('pg_catalog', 'information_schema', %(own_schema)s)
  AND n.nspname NOT LIKE 'pg\\_%%'
  AND has_table_privilege(c.oid, 'SELECT')
ORDER BY n.nspname, c.relname, a.attnum
"""


def connection_tables(*, connection) -> list[dict]:
    """Tables the user may SELECT, each with its columns (name, type, nullable) and primary key."""
    with customer_connect(connection) as conn:
        rows = conn.execute(TABLES, {"own_schema": connection.schema}).fetchall()
    tables: dict[str, dict] = {}
    for schema, table, column, type_, notnull, in_pk, _ in rows:
        entry = tables.setdefault(f"{schema}.{table}", {"schema": schema, "name": table, "columns": [],
                                                       "primary_key": []})
        entry["columns"].append({"name": column, "type": type_, "nullable": not notnull})
        if in_pk:
            entry["primary_key"].append(column)
    return list(tables.values())
