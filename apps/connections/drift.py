"""Drift: what a customer's schema or migrations did to Rowbell's captures, found before and after it bites.

A trigger never makes a customer's write fail (capture.py logs an `error` event instead), so a column renamed,
dropped or retyped by a migration shows up here, by two routes:

1. Before any write: the catalog is compared with what each wanted capture reads (its table, key, listed
   columns, predicate columns and their types) and with the triggers it needs on the table and each of its
   partitions.
2. After a write: the last event each capture logged was an `error` event (kept on the connection by the
   poller, cleared by the capture's next good event).

Problems are dicts: {"capture", "table", "kind", "detail", "repairable"}; `kind` is one of missing_table,
missing_column, type_changed, missing_trigger, disabled_trigger, trigger_error (and install_failed, from
services). A repairable problem (a missing trigger, e.g. on a
partition created since) is fixed by installing again; the others need the source corrected (or the column
put back), then a repair.
"""

from __future__ import annotations

import json

from psycopg import sql

from .capture import (NOOP_FUNCTION, TRIGGERS_OF, Capture, _trigger_in_place, capture_tables, trigger_disabled,
                      trigger_operations)
from .introspection import column_types


def _columns_read(capture: Capture) -> list[str]:
    from .conditions import condition_columns

    columns = list(capture.primary_key) + list(capture.update_columns)
    if capture.relation_column:
        columns.append(capture.relation_column)
    if capture.predicate:
        columns += sorted(condition_columns(json.loads(capture.predicate)))
    return list(dict.fromkeys(columns))


def captures_drift(conn, *, schema: str, captures: list[Capture]) -> list[dict]:
    """What no longer matches between `captures` and the customer database (see the module docstring).
    `conn` is an autocommit customer connection; only the catalog is read."""
    problems: list[dict] = []
    for capture in captures:
        table = capture.qualified_table

        def problem(kind: str, detail: str, repairable: bool = False):
            problems.append({"capture": capture.name, "table": capture.reported_table or table, "kind": kind,
                             "detail": detail, "repairable": repairable})

        if conn.execute("SELECT to_regclass(%s)", [sql.Identifier(capture.schema, capture.table).as_string(conn)]
                        ).fetchone()[0] is None:
            problem("missing_table", f"Table {table} no longer exists (renamed or dropped).")
            continue
        wanted = _columns_read(capture)
        current = column_types(conn, schema=capture.schema, table=capture.table, columns=wanted)
        for column in wanted:
            if column not in current:
                role = ("key column" if column in capture.primary_key else "column")
                problem("missing_column", f"The {role} {column} of {table} no longer exists (renamed or dropped).")
        recorded = json.loads(capture.types) if capture.types else {}
        for column, was in recorded.items():
            now = current.get(column)
            if now is not None and now["base"] != was["base"]:
                problem("type_changed", f"Column {column} of {table} changed type from {was['base']} to "
                                        f"{now['base']}.")
        tables = capture_tables(conn, capture)
        existing = {(row[0], row[1]): row for row in conn.execute(TRIGGERS_OF, {"tables": [t[2] for t in tables]})}
        for op in trigger_operations(capture):
            for table_schema, table_name, oid in tables:
                found = existing.get((oid, f"{capture.name}_{op}"))
                if not _trigger_in_place(found, capture, op, schema):
                    state = "retired" if found is not None and found[3] == NOOP_FUNCTION else "missing"
                    problem("missing_trigger", f"The {op} trigger is {state} on {table_schema}.{table_name}.",
                            repairable=True)
                elif trigger_disabled(found):
                    # Someone's ALTER TABLE ... DISABLE TRIGGER (often around a bulk load): not undone behind
                    # their back; an operator's repair enables it again.
                    problem("disabled_trigger", f"The {op} trigger on {table_schema}.{table_name} is "
                                                f"{trigger_disabled(found)}: changes there are not captured. "
                                                "“Repair triggers” enables it again.")
    return problems


# The trigger a good event of a mutation capture comes from.
TRIGGER_OF_EVENT = {"insert": {"insert"}, "update": {"update"}, "delete": {"delete"}, "truncate": {"truncate"}}


def capture_errors_note(*, connection, events) -> None:
    """Keep, per capture, the last `error` event the poller recorded, and forget it when a good event of
    the same capture follows. Call in the transaction that records the events."""
    errors = dict(connection.capture_errors or {})
    before = dict(errors)
    for event in events:
        if event.op == "error":
            detail = event.detail or {}
            errors[f"{event.capture}:{detail.get('op')}"] = {
                "event_id": f"evt_{event.id}", "table": event.table_name, "at": event.captured_at.isoformat(),
                "op": detail.get("op"), "sqlstate": detail.get("sqlstate"), "message": detail.get("message"),
                "rows": detail.get("rows")}
        else:
            # A good event of the same trigger clears its error. Events of classifications and relations
            # can come from more than one trigger: any of them clears the capture's errors.
            ops = TRIGGER_OF_EVENT.get(event.op)
            for key in [k for k in errors if k.split(":")[0] == event.capture]:
                if ops is None or key.split(":", 1)[1] in ops:
                    errors.pop(key)
    if errors != before:
        type(connection).objects.filter(id=connection.id).update(capture_errors=errors)
        connection.capture_errors = errors


def error_problems(connection, wanted_names: set[str]) -> list[dict]:
    """The captures whose last event was an error event, as problems."""
    out = []
    for name, error in sorted((connection.capture_errors or {}).items()):
        if name.split(":")[0] not in wanted_names:
            continue
        rows = f" ({error['rows']} changed rows not reported)" if error.get("rows") is not None else ""
        out.append({"capture": name.split(":")[0], "table": error.get("table", ""), "kind": "trigger_error",
                    "key": f"{error.get('op')}:{error.get('sqlstate')}",
                    "detail": f"The {error.get('op')} trigger could not evaluate: {error.get('message')}{rows}; "
                              f"last at {error.get('at')} ({error.get('event_id')}).",
                    "repairable": False})
    return out
