"""Structured conditions: the one way users describe a predicate over a row's columns.

    {"column": "paid", "op": "eq", "value": true}
    {"and": [{"column": "status", "op": "in", "value": ["paid", "shipped"]},
             {"column": "total", "op": "gte", "value": 100}]}

Ops: eq, ne, lt, lte, gt, gte, in, is_null, is_not_null; `and` / `or` nest. Validated against the table's
real columns and types, and compiled with psycopg.sql (Identifier for columns, Literal for values): no
text from a user is ever pasted into SQL.
"""

from __future__ import annotations

from typing import Callable

from psycopg import sql

COMPARISONS = {"eq": "=", "ne": "<>", "lt": "<", "lte": "<=", "gt": ">", "gte": ">="}
NULL_CHECKS = {"is_null": "IS NULL", "is_not_null": "IS NOT NULL"}
OPS = set(COMPARISONS) | NULL_CHECKS.keys() | {"in"}
MAX_DEPTH = 5
MAX_NODES = 50

NUMERIC = ("smallint", "integer", "bigint", "numeric", "real", "double precision")
TEXT = ("text", "character varying", "character", "citext", "uuid")


def _type_family(pg_type: str) -> str:
    base = pg_type.split("(")[0].strip()
    if base == "boolean":
        return "boolean"
    if base in NUMERIC:
        return "number"
    if base in TEXT:
        return "text"
    return "other"


def _value_ok(value, family: str) -> bool:
    if family == "boolean":
        return isinstance(value, bool)
    if family == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if family == "text":
        return isinstance(value, str)
    return False


def condition_walk(condition, *, path: str, leaf: Callable[[dict, str, dict], None]) -> dict[str, list[str]]:
    """Check a condition's structure (objects, `and` / `or` lists, depth and size, leaf fields) and call
    `leaf(node, path, errors)` on each comparison to check what it compares. Returns errors by path."""
    errors: dict[str, list[str]] = {}
    count = [0]

    def walk(node, here, depth):
        count[0] += 1
        if depth > MAX_DEPTH or count[0] > MAX_NODES:
            errors.setdefault(here, []).append(f"Too deep or too large (at most {MAX_DEPTH} levels, "
                                               f"{MAX_NODES} conditions).")
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


def condition_validate(condition, *, columns: dict[str, str], path: str) -> dict[str, list[str]]:
    """Errors by path (empty if valid). `columns` maps column name to its PostgreSQL type."""

    def leaf(node, here, errors):
        column, op = node.get("column"), node.get("op")
        if not isinstance(column, str) or column not in columns:
            errors.setdefault(f"{here}.column", []).append(f"No column {column!r} in this table.")
            return
        if not isinstance(op, str) or op not in OPS:
            errors.setdefault(f"{here}.op", []).append(f"One of: {', '.join(sorted(OPS))}.")
            return
        family = _type_family(columns[column])
        if op in NULL_CHECKS:
            if "value" in node:
                errors.setdefault(f"{here}.value", []).append(f"'{op}' takes no value.")
            return
        if family == "other":
            errors.setdefault(f"{here}.column", []).append(
                f"Column {column} is of type {columns[column]}: only boolean, number and text columns can be "
                "compared.")
            return
        value = node.get("value")
        values = value if op == "in" else [value]
        if op == "in" and (not isinstance(value, list) or not value or len(value) > 100):
            errors.setdefault(f"{here}.value", []).append("'in' takes a list of 1 to 100 values.")
            return
        if not all(_value_ok(v, family) for v in values):
            errors.setdefault(f"{here}.value", []).append(f"Must be a {family} (column {column} is "
                                                          f"{columns[column]}).")

    return condition_walk(condition, path=path, leaf=leaf)


def condition_sql(condition, alias: str) -> sql.Composable:
    """Compile a validated condition for rows named `alias` (e.g. n for NEW, o for OLD)."""
    for joiner in ("and", "or"):
        if joiner in condition:
            parts = [condition_sql(c, alias) for c in condition[joiner]]
            return sql.SQL("(") + sql.SQL(f" {joiner.upper()} ").join(parts) + sql.SQL(")")
    column = sql.Identifier(alias, condition["column"])
    op = condition["op"]
    if op in NULL_CHECKS:
        return sql.SQL("({} {})").format(column, sql.SQL(NULL_CHECKS[op]))
    if op == "in":
        return sql.SQL("({} IN ({}))").format(column, sql.SQL(", ").join(map(sql.Literal, condition["value"])))
    return sql.SQL("({} {} {})").format(column, sql.SQL(COMPARISONS[op]), sql.Literal(condition["value"]))
