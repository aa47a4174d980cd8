"""Drift: what a customer's schema or migrations did to Rowbell's captures, found before and after it bites.

A trigger never makes a customer's write fail (capture.py logs an `error` event instead), so a column renamed,
dropped or retyped by a migration shows up here, by two routes:

1. Before any write: the catalog is compared with what each wanted capture reads (its table, key, listed
   columns, predicate columns and their types) and with the triggers it needs on the table and each of its
   partitions.
2. After a write: the last event each capture logged was an `error` event (kept on the connection by the
   poller, cleared by the capture's next good event).

Problems are dicts: {"capture", "table", "kind", "detail", "repairable"}; `kind` is one of missing_table,
missing_column, type_changed, invalid_value, missing_trigger, missing_grant, disabled_trigger, stray_trigger,
missing_event_log, trigger_error (and install_failed, from services). A repairable problem (a missing trigger, e.g. on a
partition created since) is fixed by installing again; the others need the source corrected (or the column
put back), then a repair.
"""

from __future__ import annotations

import json

import psycopg
from psycopg import sql

from .capture import (
    NOOP_FUNCTION,
    STRAYS,
    TRIGGERS_OF,
    Capture,
    _trigger_in_place,
    capture_tables,
    trigger_disabled,
    trigger_operations,
)
from .checks import grant_statement
from .conditions import condition_columns
from .introspection import column_types


def _columns_read(capture: Capture) -> list[str]:
    columns = list(capture.primary_key) + list(capture.update_columns)
    if capture.relation_column:
        columns.append(capture.relation_column)
    if capture.predicate:
        columns += sorted(condition_columns(json.loads(capture.predicate)))
    return list(dict.fromkeys(columns))


FIX_SOURCE = (
    "Correct the source of the workflows and endpoints named (or undo the migration), then repair "
    "the triggers (the admin's “Repair triggers”, or `manage.py triggers install`)."
)
FIX_REPAIR = "The next health tick installs it, or repair the triggers now."


def captures_drift(conn, *, schema: str, captures: list[Capture]) -> list[dict]:
    """What no longer matches between `captures` and the customer database (see the module docstring).
    `conn` is an autocommit customer connection; the catalog is read, and each predicate value is cast to
    its column's type again (an enum label renamed since). Each problem's detail ends with what to do."""
    problems: list[dict] = []
    if (
        captures
        and conn.execute("SELECT to_regclass(%s)", [sql.Identifier(schema, "event_log").as_string(conn)]).fetchone()[0]
        is None
    ):
        problems.append(
            {
                "capture": "",
                "table": f"{schema}.event_log",
                "kind": "missing_event_log",
                "detail": f"Rowbell's event log {schema}.event_log is gone (dropped or renamed): changes "
                f"are not captured, though writes succeed. {FIX_REPAIR}",
                "repairable": True,
            }
        )
    for capture in captures:
        table = capture.qualified_table

        def problem(kind: str, detail: str, repairable: bool = False, capture=capture, table=table):
            problems.append(
                {
                    "capture": capture.name,
                    "table": capture.reported_table or table,
                    "kind": kind,
                    "detail": f"{detail} {FIX_REPAIR if repairable else FIX_SOURCE}",
                    "repairable": repairable,
                }
            )

        tables = capture_tables(conn, capture)
        if not tables:
            problem("missing_table", f"Table {table} no longer exists (renamed or dropped).")
            continue
        wanted = _columns_read(capture)
        current = column_types(conn, schema=capture.schema, table=capture.table, columns=wanted)
        for column in wanted:
            if column not in current:
                role = "key column" if column in capture.primary_key else "column"
                problem("missing_column", f"The {role} {column} of {table} no longer exists (renamed or dropped).")
        recorded = json.loads(capture.types) if capture.types else {}
        for column, was in recorded.items():
            now = current.get(column)
            if now is not None and now["base"] != was["base"]:
                problem("type_changed", f"Column {column} of {table} changed type from {was['base']} to {now['base']}.")
            elif now is not None:
                for literal, canonical in was.get("values", {}).items():
                    try:
                        with conn.transaction():
                            conn.execute(
                                sql.SQL("SELECT CAST(CAST(%s AS pg_catalog.text) AS {})").format(sql.SQL(was["base"])),
                                [canonical],
                            )
                    except psycopg.errors.DataError as exc:
                        problem(
                            "invalid_value",
                            f"The value {literal!r} compared with column {column} of {table} "
                            f"is no longer valid: {str(exc).strip().splitlines()[0]}.",
                        )
        oids = [t[2] for t in tables]
        existing = {(row[0], row[1]): row for row in conn.execute(TRIGGERS_OF, {"tables": oids})}
        grants = dict(
            conn.execute(
                "SELECT c.oid, has_table_privilege(c.oid, 'TRIGGER') FROM pg_class c WHERE c.oid = ANY(%s)", [oids]
            ).fetchall()
        )
        for op in trigger_operations(capture):
            for table_schema, table_name, oid in tables:
                found = existing.get((oid, f"{capture.name}_{op}"))
                where = f"{table_schema}.{table_name}"
                if not _trigger_in_place(found, capture, op, schema):
                    state = "retired" if found is not None and found[3] == NOOP_FUNCTION else "missing"
                    if grants.get(oid):
                        problem("missing_trigger", f"The {op} trigger is {state} on {where}.", repairable=True)
                    else:
                        problems.append(
                            {
                                "capture": capture.name,
                                "table": capture.reported_table or table,
                                "kind": "missing_grant",
                                "repairable": False,
                                "detail": f"The {op} trigger is {state} on {where}, and Rowbell's user may not "
                                f"create it: run {grant_statement(['SELECT', 'TRIGGER'], [(table_schema, table_name)], conn.info.user)}",
                            }
                        )
                elif trigger_disabled(found):
                    # Someone's ALTER TABLE ... DISABLE TRIGGER (often around a bulk load): not undone behind
                    # their back; an operator's repair enables it again.
                    problems.append(
                        {
                            "capture": capture.name,
                            "table": capture.reported_table or table,
                            "kind": "disabled_trigger",
                            "repairable": False,
                            "detail": f"The {op} trigger on {where} is {trigger_disabled(found)}: changes there "
                            "are not captured. Repair the triggers to enable it again.",
                        }
                    )
        for table_schema, table_name, trigger, _ in conn.execute(
            STRAYS, {"schema": schema, "prefix": f"{capture.name}\\_%", "tables": oids}
        ).fetchall():
            problem(
                "stray_trigger",
                f"Trigger {trigger} is still on {table_schema}.{table_name}, which is no longer "
                f"part of {table}: its changes would be reported as {table}'s.",
                repairable=True,
            )
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
            key = f"{event.capture}:{detail.get('op')}"
            earlier = errors.get(key, {})
            errors[key] = {
                "event_id": f"evt_{event.id}",
                "table": event.table_name,
                "at": event.captured_at.isoformat(),
                "op": detail.get("op"),
                "sqlstate": detail.get("sqlstate"),
                "message": detail.get("message"),
                "rows": (earlier.get("rows") or 0) + (detail.get("rows") or 0),
                "statements": earlier.get("statements", 0) + 1,
                "since": earlier.get("since") or event.captured_at.isoformat(),
            }
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
        statements = error.get("statements", 1)
        rows = (
            f" ({statements} statement{'s' if statements != 1 else ''}, {error['rows']} changed "
            f"row{'s' if error['rows'] != 1 else ''} not reported since {error.get('since', error.get('at'))})"
            if error.get("rows") is not None
            else ""
        )
        out.append(
            {
                "capture": name.split(":")[0],
                "table": error.get("table", ""),
                "kind": "trigger_error",
                "key": f"{error.get('op')}:{error.get('sqlstate')}",
                "detail": f"The {error.get('op')} trigger could not evaluate: {error.get('message')}{rows}; "
                f"last at {error.get('at')} ({error.get('event_id')}). {FIX_SOURCE} A repair "
                "clears this once the table matches its captures again.",
                "repairable": False,
            }
        )
    return out
