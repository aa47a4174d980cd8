"""What the connection's user can see in the customer database: tables, columns, types, primary keys."""

from __future__ import annotations

import psycopg
from psycopg import sql

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
        return tables_read(conn, own_schema=connection.schema)


def tables_read(conn, *, own_schema: str) -> list[dict]:
    """connection_tables on an open customer connection."""
    rows = conn.execute(TABLES, {"own_schema": own_schema}).fetchall()
    tables: dict[str, dict] = {}
    for schema, table, column, type_, notnull, in_pk, _ in rows:
        entry = tables.setdefault(
            f"{schema}.{table}", {"schema": schema, "name": table, "columns": [], "primary_key": []}
        )
        entry["columns"].append({"name": column, "type": type_, "nullable": not notnull})
        if in_pk:
            entry["primary_key"].append(column)
    return list(tables.values())


TYPES = """
SELECT t.oid, t.typtype, t.typbasetype, t.typelem, t.typcategory, pg_catalog.format_type(t.oid, -1)
FROM pg_catalog.pg_type t WHERE t.oid = ANY(%s)
"""

COLUMN_TYPES = """
SELECT a.attname, pg_catalog.format_type(a.atttypid, a.atttypmod), a.atttypid
FROM pg_catalog.pg_attribute a
WHERE a.attrelid = %(table)s::regclass AND a.attnum > 0 AND NOT a.attisdropped AND a.attname = ANY(%(columns)s)
"""


def _resolved(conn, oid: int) -> tuple:
    """(oid, typtype, typbasetype, typelem, category, name) of the type after every domain is replaced by its base."""
    for _ in range(32):  # domains over domains: a bounded walk
        row = conn.execute(TYPES, [[oid]]).fetchone()
        if row is None or row[1] != "d":
            return row
        oid = row[2]
    return row


COMPARISON_OPERATORS = ("=", "<>", "<", "<=", ">", ">=")

# Comparison operators defined for exactly this type outside pg_catalog (an extension's: citext, hstore, isn).
EXTENSION_OPERATORS = """
SELECT o.oprname, n.nspname FROM pg_catalog.pg_operator o JOIN pg_catalog.pg_namespace n ON n.oid = o.oprnamespace
WHERE o.oprleft = %(oid)s AND o.oprright = %(oid)s AND o.oprname = ANY(%(names)s) AND n.nspname <> 'pg_catalog'
"""


def operator_sql(operator: str, schema: str | None) -> sql.Composable:
    """`=` as PostgreSQL resolves it inside a trigger function whose search_path is pg_catalog alone, or
    `OPERATOR(schema.=)` for an operator defined in another schema (which that path would not find)."""
    if not schema:
        return sql.SQL(operator)
    return sql.SQL("OPERATOR({}.{})").format(sql.Identifier(schema), sql.SQL(operator))


def _operator_exists(conn, type_name: str, operator: sql.Composable) -> bool:
    """Whether `type operator type` resolves with the trigger functions' search_path (tried on NULLs, which
    run nothing)."""
    try:
        with conn.transaction():
            conn.execute("SET LOCAL search_path = pg_catalog, pg_temp")
            conn.execute(sql.SQL("SELECT NULL::{t} {op} NULL::{t}").format(t=sql.SQL(type_name), op=operator))
        return True
    except (psycopg.errors.UndefinedFunction, psycopg.errors.UndefinedObject):
        return False


def column_types(conn, *, schema: str, table: str, columns: list[str]) -> dict[str, dict]:
    """What comparisons a column's type allows, for captures: {column: {"type": as declared, "base": the type
    compared (a domain's base, as format_type prints it), "eq": has `=`, "order": has `<`, and "ops":
    {operator: schema} for comparison operators an extension defines for the type (citext's `=` is
    case-insensitive: the trigger must call that one, not text's)}}.

    Resolved as PostgreSQL resolves them inside the trigger functions, not from a list: an array compares
    only if its elements do (`point[]` has an `=` that fails at run time), and a composite type is never
    compared whole (its fields may lack equality). Missing columns are left out. `conn` is an open customer
    connection in autocommit.
    """
    name = sql.Identifier(schema, table).as_string(conn)
    out: dict[str, dict] = {}
    # Names as format_type() prints them with only pg_catalog on the path: schema-qualified wherever needed,
    # as the trigger functions (whose search_path is pinned to pg_catalog) must write them.
    conn.execute("SET search_path = pg_catalog")
    try:
        rows = conn.execute(COLUMN_TYPES, {"table": name, "columns": list(columns)}).fetchall()
        resolved = {oid: _resolved(conn, oid) for _, _, oid in rows}
        elements = {oid: _resolved(conn, r[3]) for oid, r in resolved.items() if r[4] == "A" and r[3]}
    finally:
        conn.execute("RESET search_path")
    for column, declared, oid in rows:
        base_oid, typtype, _, elem, category, base_name = resolved[oid]
        checked, checked_oid = base_name, base_oid
        if category == "A" and elem:
            element = elements.get(oid)
            checked = element[5] if element else base_name
            typtype = element[1] if element else typtype
        ops = {}
        if category != "A":
            ops = dict(
                conn.execute(EXTENSION_OPERATORS, {"oid": checked_oid, "names": list(COMPARISON_OPERATORS)}).fetchall()
            )
        comparable = typtype != "c" and typtype != "p"
        eq = comparable and _operator_exists(conn, checked, operator_sql("=", ops.get("=")))
        order = comparable and _operator_exists(conn, checked, operator_sql("<", ops.get("<")))
        out[column] = {"type": declared, "base": base_name, "eq": eq, "order": order}
        if ops:
            out[column]["ops"] = ops
    return out


# Date/time inputs that mean a different moment each time they are read.
MOVING_INPUTS = {"now", "today", "tomorrow", "yesterday"}


def values_check(conn, *, checks: list[tuple[str, str, str]], types: dict[str, dict]) -> dict[str, list[str]]:
    """Ask the customer database whether each value is valid input for its column's type: errors by path.
    `checks` is [(path, column, literal text)] as conditions.condition_validate gathers them.

    Each valid value's canonical spelling is recorded in types[column]["values"] ({literal: canonical}), read
    under fixed settings (UTC, ISO dates): the trigger compares with that, so that what `'2024-01-01 00:00'`
    or `'01/02/2024'` means does not depend on the TimeZone or DateStyle of the session that writes the row.
    """
    errors: dict[str, list[str]] = {}
    for path, column, literal in checks:
        info = types[column]
        if literal.strip().lower() in MOVING_INPUTS:
            # PostgreSQL reads them when the value is cast: the trigger would compare with the moment of saving.
            errors.setdefault(path, []).append(
                f"'{literal}' would be fixed at the moment the source is saved, not read at each write: give a "
                f"date or time (column {column} is {info['type']})."
            )
            continue
        try:
            with conn.transaction():
                conn.execute("SET LOCAL TimeZone = 'UTC'")
                conn.execute("SET LOCAL DateStyle = 'ISO, MDY'")
                conn.execute("SET LOCAL IntervalStyle = 'postgres'")
                conn.execute("SET LOCAL extra_float_digits = 3")
                canonical = conn.execute(
                    sql.SQL("SELECT CAST(CAST(%s AS pg_catalog.text) AS {})::pg_catalog.text").format(
                        sql.SQL(info["base"])
                    ),
                    [literal],
                ).fetchone()[0]
            info.setdefault("values", {})[literal] = canonical
        except psycopg.errors.DataError as exc:
            reason = str(exc).strip().splitlines()[0]
            errors.setdefault(path, []).append(
                f"Not a valid value for column {column} of type {info['type']}: {reason}."
            )
    return errors


SCHEMA_TABLES = """
SELECT n.nspname, c.relname, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
       COALESCE(a.attnum = ANY (pk.conkey), false), col_description(c.oid, a.attnum), obj_description(c.oid, 'pg_class')
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
LEFT JOIN pg_constraint pk ON pk.conrelid = c.oid AND pk.contype = 'p'
WHERE c.relkind IN ('r', 'p')
  AND n.nspname NOT IN ('pg_catalog', 'information_schema', %(own_schema)s)
  AND n.nspname NOT LIKE 'pg\\_%%'
  AND has_table_privilege(c.oid, 'SELECT')
  AND NOT c.relispartition
ORDER BY n.nspname, c.relname, a.attnum
"""

# One-column foreign keys between tables the user may read.
SCHEMA_FOREIGN_KEYS = """
SELECT n.nspname, c.relname, a.attname, fn.nspname, fc.relname, fa.attname
FROM pg_constraint k
JOIN pg_class c ON c.oid = k.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = k.conkey[1]
JOIN pg_class fc ON fc.oid = k.confrelid JOIN pg_namespace fn ON fn.oid = fc.relnamespace
JOIN pg_attribute fa ON fa.attrelid = k.confrelid AND fa.attnum = k.confkey[1]
WHERE k.contype = 'f' AND array_length(k.conkey, 1) = 1
  AND has_table_privilege(c.oid, 'SELECT') AND has_table_privilege(fc.oid, 'SELECT')
  AND n.nspname <> %(own_schema)s
"""

# At most this many tables are described: a schema is sent whole to a model, whose context is bounded.
SCHEMA_MAX_TABLES = 200


def connection_schema(*, connection) -> list[dict]:
    """The catalog of the tables the connection's user may read, as the workflow builder is grounded in it:
    [{"table": "public.orders", "comment", "columns": [{"name", "type", "nullable", "comment"}], "primary_key":
    [...], "foreign_keys": [{"column", "references": "public.customers.id"}]}], at most SCHEMA_MAX_TABLES. The
    catalog only: no row is read. Raises psycopg.Error when the database cannot be read."""
    with customer_connect(connection) as conn:
        rows = conn.execute(SCHEMA_TABLES, {"own_schema": connection.schema}).fetchall()
        keys = conn.execute(SCHEMA_FOREIGN_KEYS, {"own_schema": connection.schema}).fetchall()
    tables: dict[str, dict] = {}
    for schema, table, column, type_, notnull, in_pk, comment, table_comment in rows:
        name = f"{schema}.{table}"
        if name not in tables and len(tables) >= SCHEMA_MAX_TABLES:
            continue
        entry = tables.setdefault(
            name, {"table": name, "comment": table_comment or "", "columns": [], "primary_key": [], "foreign_keys": []}
        )
        entry["columns"].append({"name": column, "type": type_, "nullable": not notnull, "comment": comment or ""})
        if in_pk:
            entry["primary_key"].append(column)
    for schema, table, column, f_schema, f_table, f_column in keys:
        child = tables.get(f"{schema}.{table}")
        if child is not None:
            child["foreign_keys"].append({"column": column, "references": f"{f_schema}.{f_table}.{f_column}"})
    return list(tables.values())
