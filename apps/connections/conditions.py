"""Structured conditions: the one way users describe a predicate over a row's columns.

    {"column": "paid", "op": "eq", "value": true}
    {"and": [{"column": "status", "op": "in", "value": ["paid", "shipped"]},
             {"column": "total", "op": "gte", "value": 100}]}

Ops: eq, ne, lt, lte, gt, gte, in, is_null, is_not_null; `and` / `or` nest. Validated against the table's
real columns and types, and compiled with psycopg.sql (Identifier for columns, Literal for values): no
text from a user is ever pasted into SQL.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal

from psycopg import sql

from .introspection import operator_sql
from .names import did_you_mean

COMPARISONS = {"eq": "=", "ne": "<>", "lt": "<", "lte": "<=", "gt": ">", "gte": ">="}
NULL_CHECKS = {"is_null": "IS NULL", "is_not_null": "IS NOT NULL"}
OPS = set(COMPARISONS) | NULL_CHECKS.keys() | {"in"}
MAX_DEPTH = 5
MAX_NODES = 50

NUMERIC = ("smallint", "integer", "bigint", "numeric", "real", "double precision")
TEXT = ("text", "character varying", "character", "citext", "uuid")
ORDERING = {"lt", "lte", "gt", "gte"}


def _type_family(pg_type: str) -> str:
    base = pg_type.split("(")[0].strip()
    if base == "boolean":
        return "boolean"
    if base in NUMERIC:
        return "number"
    if base in TEXT:
        return "text"
    if base in ("jsonb", "json"):
        return "json"
    return "other"


def _value_ok(value, family: str) -> bool:
    if family == "boolean":
        return isinstance(value, bool)
    if family == "number":
        return isinstance(value, (int, float, Decimal)) and not isinstance(value, bool)
    if family == "text":
        return isinstance(value, str)
    if family == "json":
        return True
    # Any other type takes its value in PostgreSQL's input syntax (a string, or a number for number-like
    # types); the customer database itself checks it when the source is saved.
    return isinstance(value, (str, int, float, Decimal)) and not isinstance(value, bool)


def value_literal(value) -> str:
    """A condition value as the text PostgreSQL's input function of the column's type reads."""
    from apps.core import exactjson

    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)) or value is None:
        return exactjson.dumps(value)  # a Decimal (a number read with every digit) as a number
    return str(value)


def condition_walk(condition, *, path: str, leaf: Callable[[dict, str, dict], None]) -> dict[str, list[str]]:
    """Check a condition's structure (objects, `and` / `or` lists, depth and size, leaf fields) and call
    `leaf(node, path, errors)` on each comparison to check what it compares. Returns errors by path."""
    errors: dict[str, list[str]] = {}
    count = [0]

    def walk(node, here, depth):
        count[0] += 1
        if depth > MAX_DEPTH or count[0] > MAX_NODES:
            errors.setdefault(here, []).append(
                f"Too deep or too large (at most {MAX_DEPTH} levels, {MAX_NODES} conditions)."
            )
            return
        if not isinstance(node, dict):
            errors.setdefault(here, []).append("Must be an object.")
            return
        for joiner in ("and", "or"):
            if joiner in node:
                if set(node) != {joiner} or not isinstance(node[joiner], list) or not node[joiner]:
                    errors.setdefault(here, []).append(f"'{joiner}' takes a non-empty list, alone.")
                    return
                for i, child in enumerate(node[joiner]):
                    walk(child, f"{here}.{joiner}[{i}]", depth + 1)
                return
        unknown = set(node) - {"column", "op", "value"}
        if unknown:
            errors.setdefault(here, []).append(f"Unknown field(s): {', '.join(sorted(unknown))}.")
            return
        leaf(node, here, errors)

    walk(condition, path, 1)
    return errors


def condition_validate(
    condition, *, columns: dict[str, dict], path: str, values: list | None = None
) -> dict[str, list[str]]:
    """Errors by path (empty if valid).

    `columns` maps a column name to what the table says of its type: {"type": as declared, "base": the type
    compared (a domain's base type), "eq": it has an equality operator, "order": it has an ordering} (see
    introspection.column_types). An operator the type lacks is refused with the reason (json has no `=`,
    point no `<`), so that a predicate never compiles to a comparison PostgreSQL cannot run. When `values`
    is a list, each compared value is appended as (path, column, literal text) for the caller to check in
    the customer database against the column's type (a uuid column refuses "vip").
    """

    def leaf(node, here, errors):
        column, op = node.get("column"), node.get("op")
        if not isinstance(column, str) or column not in columns:
            errors.setdefault(f"{here}.column", []).append(
                f"No column {column!r} in this table.{did_you_mean(column, columns)}"
            )
            return
        if not isinstance(op, str) or op not in OPS:
            errors.setdefault(f"{here}.op", []).append(f"One of: {', '.join(sorted(OPS))}.")
            return
        info = columns[column]
        if op in NULL_CHECKS:
            if "value" in node:
                errors.setdefault(f"{here}.value", []).append(f"'{op}' takes no value.")
            return
        needed = "order" if op in ORDERING else "eq"
        if not info.get(needed):
            can = ["is_null", "is_not_null"] + (["eq", "ne", "in"] if info.get("eq") else [])
            errors.setdefault(f"{here}.op", []).append(
                f"Column {column} is of type {info['type']}, which has no "
                f"{'ordering' if needed == 'order' else 'equality operator'} in PostgreSQL: use {', '.join(can)}"
                + (" (or store it as jsonb)." if info["base"] == "json" else ".")
            )
            return
        family = _type_family(info["base"])
        value = node.get("value")
        items = value if op == "in" else [value]
        if op == "in" and (not isinstance(value, list) or not value or len(value) > 100):
            errors.setdefault(f"{here}.value", []).append("'in' takes a list of 1 to 100 values.")
            return
        if not all(_value_ok(v, family) for v in items):
            kind = {"other": "string in the type's input syntax", "json": "JSON value"}.get(family, family)
            errors.setdefault(f"{here}.value", []).append(f"Must be a {kind} (column {column} is {info['type']}).")
            return
        if values is not None and family != "number":
            for i, v in enumerate(items):
                values.append((f"{here}.value" + (f"[{i}]" if op == "in" else ""), column, value_literal(v)))

    return condition_walk(condition, path=path, leaf=leaf)


def condition_columns(condition) -> set[str]:
    """The columns a (valid) condition reads."""
    for joiner in ("and", "or"):
        if joiner in condition:
            return set().union(*(condition_columns(c) for c in condition[joiner]))
    return {condition["column"]}


def condition_sql(condition, alias: str, types: dict | None = None) -> sql.Composable:
    """Compile a validated condition for rows named `alias` (e.g. n for NEW, o for OLD).

    With `types` ({column: {"base": type}}), both sides are compared in the column's base type with the
    value cast explicitly, so a domain's CHECK never runs on a literal and no implicit resolution picks
    another operator. Captures saved before types were recorded compile as they did.
    """
    types = types or {}
    for joiner in ("and", "or"):
        if joiner in condition:
            parts = [condition_sql(c, alias, types) for c in condition[joiner]]
            return sql.SQL("(") + sql.SQL(f" {joiner.upper()} ").join(parts) + sql.SQL(")")
    column: sql.Composable = sql.Identifier(alias, condition["column"])
    op = condition["op"]
    if op in NULL_CHECKS:
        return sql.SQL("({} {})").format(column, sql.SQL(NULL_CHECKS[op]))
    info = types.get(condition["column"], {})
    base = info.get("base")
    values = condition["value"] if op == "in" else [condition["value"]]
    if not base:  # a capture saved before types were recorded: as it compiled then
        literals: list[sql.Composable] = [sql.Literal(v) for v in values]
        if op == "in":
            return sql.SQL("({} IN ({}))").format(column, sql.SQL(", ").join(literals))
        return sql.SQL("({} {} {})").format(column, sql.SQL(COMPARISONS[op]), literals[0])
    # The base type's name is as format_type() printed it in the customer database: valid SQL as is.
    # Numbers are compared as numeric, so that `integer gte 99.5` means what it says; other values in the
    # canonical spelling read when the source was saved (see introspection.values_check).
    typed = sql.SQL(base)
    number = _type_family(base) == "number"
    canonical = info.get("values", {})
    literal_type = sql.SQL("pg_catalog.numeric") if number else typed
    column = sql.SQL("CAST({} AS {})").format(column, typed)
    literals = [
        sql.SQL("CAST({} AS {})").format(sql.Literal(canonical.get(value_literal(v), value_literal(v))), literal_type)
        for v in values
    ]
    ops = info.get("ops", {})
    if op == "in":
        if not ops:
            return sql.SQL("({} IN ({}))").format(column, sql.SQL(", ").join(literals))
        equal = operator_sql("=", ops.get("="))
        return (
            sql.SQL("(")
            + sql.SQL(" OR ").join(sql.SQL("{} {} {}").format(column, equal, literal) for literal in literals)
            + sql.SQL(")")
        )
    symbol = COMPARISONS[op]
    return sql.SQL("({} {} {})").format(column, operator_sql(symbol, ops.get(symbol)), literals[0])
