"""Conditions on a run's data: the same structured format as classifications, over paths instead of columns.

    {"column": "data.plan", "op": "eq", "value": "pro"}
    {"or": [{"column": "row.total", "op": "gte", "value": 100}, {"column": "steps.wait-paid.timed_out",
                                                                 "op": "eq", "value": true}]}

`column` is a dotted path into what steps see (`data`, `recipient`, `event`, `row`, `steps`, `batch`).
A missing path is null; comparing values of different kinds is false (never an error), so a condition
always has an answer. Numbers read from a customer's database may be Decimal (every digit kept): against a
float from the definition they compare as floats, so `row.total eq 19.9` holds for a numeric 19.90.
"""

from __future__ import annotations

import operator
import re
from decimal import Decimal
from typing import Any

from apps.connections.conditions import NULL_CHECKS, OPS, condition_walk

ROOTS = ("data", "recipient", "event", "row", "rows", "steps", "batch", "workflow")
PATH = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{0,63}(\.[A-Za-z0-9_-]{1,64}){0,9}$")
_COMPARE = {
    "eq": operator.eq,
    "ne": operator.ne,
    "lt": operator.lt,
    "lte": operator.le,
    "gt": operator.gt,
    "gte": operator.ge,
}


def _scalar(value) -> bool:
    return value is None or isinstance(value, (bool, int, float, str))


def data_condition_validate(condition, *, path: str) -> dict[str, list[str]]:
    """Errors by path (empty if valid)."""

    def leaf(node, here, errors):
        column, op = node.get("column"), node.get("op")
        if not isinstance(column, str) or not PATH.fullmatch(column) or column.split(".")[0] not in ROOTS:
            errors.setdefault(f"{here}.column", []).append(
                f"A dotted path starting with one of: {', '.join(ROOTS)} (e.g. data.plan)."
            )
            return
        if not isinstance(op, str) or op not in OPS:
            errors.setdefault(f"{here}.op", []).append(f"One of: {', '.join(sorted(OPS))}.")
            return
        if op in NULL_CHECKS:
            if "value" in node:
                errors.setdefault(f"{here}.value", []).append(f"'{op}' takes no value.")
            return
        value = node.get("value")
        if op == "in":
            if not isinstance(value, list) or not value or len(value) > 100 or not all(map(_scalar, value)):
                errors.setdefault(f"{here}.value", []).append("'in' takes a list of 1 to 100 plain values.")
        elif "value" not in node or not _scalar(value) or value is None:
            errors.setdefault(f"{here}.value", []).append("A string, number or boolean (is_null tests for null).")

    return condition_walk(condition, path=path, leaf=leaf)


def path_get(context: dict, path: str):
    """The value at a dotted path, or None if any part is missing."""
    value: Any = context
    for part in path.split("."):
        if isinstance(value, dict):
            value = value.get(part)
        elif isinstance(value, list) and part.isdigit():
            index = int(part)
            value = value[index] if index < len(value) else None
        else:
            return None
    return value


def _same_kind(a, b) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool)
    numbers = (int, float, Decimal)
    return (isinstance(a, numbers) and isinstance(b, numbers)) or (isinstance(a, str) and isinstance(b, str))


def data_condition_holds(condition: dict, context: dict) -> bool:
    """Evaluate a validated condition against a run's context."""
    if "and" in condition:
        return all(data_condition_holds(c, context) for c in condition["and"])
    if "or" in condition:
        return any(data_condition_holds(c, context) for c in condition["or"])
    value, op = path_get(context, condition["column"]), condition["op"]
    if op == "is_null":
        return value is None
    if op == "is_not_null":
        return value is not None
    if op == "in":
        return any(_same_kind(value, v) and operator.eq(*_comparable(value, v)) for v in condition["value"])
    expected = condition["value"]
    if not _same_kind(value, expected):
        return op == "ne"
    return _COMPARE[op](*_comparable(value, expected))


def _comparable(a, b) -> tuple:
    """A Decimal meeting a float compares as a float (Decimal("19.90") == 19.9 is False in Python)."""
    if isinstance(a, Decimal) and isinstance(b, float):
        return float(a), b
    if isinstance(b, Decimal) and isinstance(a, float):
        return a, float(b)
    return a, b


def first_holding(conditions, context: dict) -> int | None:
    """The index of the first condition that holds (a branch's choice), or None."""
    return next((i for i, condition in enumerate(conditions) if data_condition_holds(condition, context)), None)
