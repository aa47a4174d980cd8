"""Row-event sources: what a webhook subscription watches in a customer database, validated against
the table as it really is (it exists, has a primary key, has the columns named)."""

from __future__ import annotations

import json
import re

import psycopg
from psycopg import sql
from rest_framework.exceptions import ValidationError

from apps.core.text import unstorable_find

from .capture import Capture
from .checks import grant_statement, table_privileges_check
from .conditions import condition_columns, condition_validate
from .customer import customer_connect
from .introspection import column_types, tables_read, values_check
from .names import did_you_mean, table_display, table_parse
from .services import CustomerDatabaseUnavailable

IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")

# Event types of the mutation family, and the operation each one captures, in a stable order.
MUTATION_EVENTS = {"row.created": "insert", "row.updated": "update", "row.deleted": "delete"}
EVENT_OF_OPERATION = {op: event for event, op in MUTATION_EVENTS.items()}
EVENT_OF_OPERATION.update(
    {
        "entered": "classification.entered",
        "left": "classification.left",
        "added": "relation.added",
        "removed": "relation.removed",
        # Every row removed at once: their ids are not known (see capture.py).
        "truncate": "table.truncated",
        # A join table emptied: every link of the parent table removed.
        "cleared": "relation.cleared",
        # A trigger that could not evaluate (see drift.py): never delivered, never run.
        "error": "capture.error",
    }
)
# Operations that are not row events of their own: nothing is sent or run for them.
NOT_DELIVERED = {"error"}
NOT_RUN = {"error", "truncate", "cleared"}
RELATION_EVENTS = {"relation.added": "insert", "relation.removed": "delete"}
TRANSITIONS = {"entered": ("entered",), "left": ("left",), "both": ("entered", "left")}


def row_source_validate(*, connection, source, rows_from: dict | None = None) -> tuple[dict, Capture]:
    """Return (normalized source, the Capture to install). Errors name `source.<field>`.

    `rows_from`, when given, is filled with where the rows an event names are read: the table and its key
    columns (for relation events, the parent table and the column the join table's foreign key references).
    """
    if not isinstance(source, dict):
        raise ValidationError({"source": ["Must be an object: {connection, table, events, columns}."]})
    # Text neither database can store (e.g. a NUL among an `in` predicate's values) is refused before either is asked.
    unstorable = unstorable_find(source, "source")
    if unstorable:
        raise ValidationError({unstorable[0]: [unstorable[1]]})
    unknown = set(source) - {"connection", "table", "events", "columns", "classification", "through", "column"}
    if unknown:
        raise ValidationError({f"source.{k}": ["Unknown field."] for k in sorted(unknown)})
    table, events, columns = source.get("table"), source.get("events"), source.get("columns", [])
    classification = source.get("classification")
    errors: dict[str, list[str]] = {}
    if not isinstance(table, str) or not table:
        errors["source.table"] = ["Required: schema.table (or a table in public)."]
    if classification is not None:
        if events is not None or "columns" in source:
            errors["source.classification"] = ["A classification replaces events and columns."]
        elif not isinstance(classification, dict) or set(classification) - {"name", "predicate", "on"}:
            errors["source.classification"] = ['An object: {"name", "predicate", "on"}.']
        else:
            if not isinstance(classification.get("name"), str) or not IDENTIFIER.match(classification["name"]):
                errors["source.classification.name"] = ["A lower-case name: letters, digits and '_'."]
            if (
                not isinstance(classification.get("on", "both"), str)
                or classification.get("on", "both") not in TRANSITIONS
            ):
                errors["source.classification.on"] = ["One of: entered, left, both."]
        events = events if events is not None else []
    elif "through" in source:
        if (
            not isinstance(events, list)
            or not events
            or not all(isinstance(e, str) and e in RELATION_EVENTS for e in events)
        ):
            errors["source.events"] = [f"With 'through', a non-empty list of: {', '.join(RELATION_EVENTS)}."]
        if not isinstance(source["through"], str) or not source["through"]:
            errors["source.through"] = ["The join table, as schema.table."]
    elif (
        not isinstance(events, list)
        or not events
        or not all(isinstance(e, str) and e in MUTATION_EVENTS for e in events)
    ):
        errors["source.events"] = [f"A non-empty list of: {', '.join(MUTATION_EVENTS)}."]
    if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns):
        errors["source.columns"] = ["A list of column names."]
    elif columns and isinstance(events, list) and "row.updated" not in events:
        errors["source.columns"] = ["Columns only apply to row.updated."]
    if errors:
        raise ValidationError(errors)
    assert isinstance(table, str)  # else errors["source.table"] was raised
    try:
        schema, name = table_parse(table)
    except ValueError as exc:
        raise ValidationError({"source.table": [str(exc)]}) from None
    if schema == connection.schema or schema in ("pg_catalog", "information_schema") or schema.startswith("pg_"):
        raise ValidationError(
            {
                "source.table": [
                    f"{schema} is {'Rowbell’s own schema' if schema == connection.schema else 'a system schema'}: "
                    "watch one of your tables."
                ]
            }
        )
    # One customer connection for every read the checks make.
    try:
        with customer_connect(connection) as conn:
            return _source_in_database(
                conn,
                connection,
                source=source,
                schema=schema,
                name=name,
                events=events,
                columns=columns,
                classification=classification,
                rows_from=rows_from,
            )
    except psycopg.OperationalError as exc:
        raise CustomerDatabaseUnavailable.from_error(exc) from exc


def _source_in_database(
    conn, connection, *, source, schema, name, events, columns, classification, rows_from
) -> tuple[dict, Capture]:
    """row_source_validate's checks against the table as it is, on an open customer connection."""
    tables = {table_display(t["schema"], t["name"]): t for t in tables_read(conn, own_schema=connection.schema)}
    found = tables.get(table_display(schema, name))
    if found is None:
        raise ValidationError({"source.table": [_table_refusal(conn, connection, schema, name)]})
    if not found["primary_key"]:
        raise ValidationError({"source.table": [f"{schema}.{name} has no primary key: rows cannot be identified."]})
    known = {c["name"] for c in found["columns"]}
    bad = {
        f"source.columns[{i}]": [f"No column {c} in {schema}.{name}.{did_you_mean(c, known)}"]
        for i, c in enumerate(columns)
        if c not in known
    }
    if bad:
        raise ValidationError(bad)
    missing = _privileges_missing(conn, connection, schema, name)
    if missing:
        raise ValidationError({"source.table": [missing]})
    if rows_from is not None:
        rows_from.update(
            {
                "table": table_display(schema, name),
                "key": list(found["primary_key"]),
                "key_types": _types(conn, schema, name, list(found["primary_key"]), base_only=True),
            }
        )
    if classification is not None:
        return _classification(conn, connection, schema, name, found, classification)
    if "through" in source:
        return _relation(conn, connection, schema, name, found, tables, source, events, rows_from)
    operations = tuple(op for event, op in MUTATION_EVENTS.items() if event in events)
    update_columns = tuple(sorted(set(columns)))
    # The key is compared too, to pair old and new rows of an update (an extension type's key needs its own
    # operator named).
    types = _types(conn, schema, name, list(found["primary_key"]) + list(update_columns)) if update_columns else {}
    capture = Capture(
        schema=schema,
        table=name,
        primary_key=tuple(found["primary_key"]),
        operations=operations,
        update_columns=update_columns,
        types=_canonical(types),
    )
    normalized = {
        "connection": str(connection.id),
        "table": table_display(schema, name),
        "events": [e for e in MUTATION_EVENTS if e in events],
        "columns": sorted(set(columns)),
    }
    return normalized, capture


def _canonical(types: dict) -> str:
    return json.dumps(types, sort_keys=True, separators=(",", ":")) if types else ""


def _types(conn, schema: str, table: str, columns: list[str], *, base_only: bool = False) -> dict:
    """column_types of some columns (see introspection.column_types); with `base_only`, {column: base type}."""
    types = column_types(conn, schema=schema, table=table, columns=columns)
    if base_only:
        return {c: t["base"] for c, t in types.items()}
    return types


def _privileges_missing(conn, connection, schema: str, table: str) -> str:
    """Why the capture of `table` could not be installed for lack of a privilege, with the GRANT that fixes
    it (on the table and on each of its partitions), or "" when nothing is missing."""
    check = table_privileges_check(conn, schema=schema, table=table, name=f"{schema}.{table}")
    return "" if check.ok else f"{connection.user} cannot capture {schema}.{table}. {check.detail}"


def _table_refusal(conn, connection, schema: str, name: str) -> str:
    """Why a table is not among those the user can read: it does not exist, or the user lacks a grant
    (then the GRANT that fixes it)."""
    exists = conn.execute(
        "SELECT c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relname = %s",
        [schema, name],
    ).fetchone()
    usage = conn.execute(
        "SELECT has_schema_privilege(oid, 'USAGE') FROM pg_namespace WHERE nspname = %s", [schema]
    ).fetchone()
    if exists is None or exists[0] not in ("r", "p"):
        return f"No table {schema}.{name} in {connection.database}."
    if usage is not None and not usage[0]:
        return (
            f"{connection.user} may not use schema {schema}: run "
            + sql.SQL("GRANT USAGE ON SCHEMA {} TO {};")
            .format(sql.Identifier(schema), sql.Identifier(connection.user))
            .as_string(None)
            + " and "
            + grant_statement(["SELECT", "TRIGGER"], [(schema, name)], connection.user)
        )
    return (
        f"{connection.user} cannot read {schema}.{name}: run "
        f"{grant_statement(['SELECT', 'TRIGGER'], [(schema, name)], connection.user)}"
    )


def _classification(conn, connection, schema, name, found, classification) -> tuple[dict, Capture]:
    predicate = classification.get("predicate")
    declared = {c["name"]: c["type"] for c in found["columns"]}
    # Structure first (no database needed), then the types of the columns it names, then its values.
    shape = condition_validate(
        predicate,
        columns={c: {"type": t, "base": t, "eq": True, "order": True} for c, t in declared.items()},
        path="source.classification.predicate",
    )
    if shape:
        raise ValidationError(shape)
    types = _types(conn, schema, name, sorted(condition_columns(predicate) | set(found["primary_key"])))
    values: list = []
    errors = condition_validate(predicate, columns=types, path="source.classification.predicate", values=values)
    if not errors and values:
        errors = values_check(conn, checks=values, types=types)
    if errors:
        raise ValidationError(errors)
    transitions = TRANSITIONS[classification.get("on", "both")]
    # A new row can only enter, a deleted row only leave; updates can do either.
    operations = tuple(
        op
        for op, needed in (("insert", "entered"), ("update", None), ("delete", "left"))
        if needed is None or needed in transitions
    )
    capture = Capture(
        schema=schema,
        table=name,
        primary_key=tuple(found["primary_key"]),
        operations=operations,
        classification=classification["name"],
        predicate=json.dumps(predicate, sort_keys=True, separators=(",", ":")),
        transitions=transitions,
        types=_canonical(types),
    )
    normalized = {
        "connection": str(connection.id),
        "table": table_display(schema, name),
        "classification": {
            "name": classification["name"],
            "predicate": predicate,
            "on": classification.get("on", "both"),
        },
    }
    return normalized, capture


FOREIGN_KEYS = """
SELECT a.attname, r.attname
FROM pg_constraint c
JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = c.conkey[1]
JOIN pg_attribute r ON r.attrelid = c.confrelid AND r.attnum = c.confkey[1]
WHERE c.contype = 'f' AND array_length(c.conkey, 1) = 1
  AND c.conrelid = (SELECT oid FROM pg_class WHERE relname = %(join)s
                    AND relnamespace = (SELECT oid FROM pg_namespace WHERE nspname = %(join_schema)s))
  AND c.confrelid = (SELECT oid FROM pg_class WHERE relname = %(parent)s
                     AND relnamespace = (SELECT oid FROM pg_namespace WHERE nspname = %(parent_schema)s))
"""


def _relation(conn, connection, schema, name, found, tables, source, events, rows_from=None) -> tuple[dict, Capture]:
    """A join table's inserts and deletes, reported against the parent rows they link."""
    try:
        join_schema, join_name = table_parse(source["through"])
    except ValueError as exc:
        raise ValidationError({"source.through": [str(exc)]}) from None
    join = tables.get(table_display(join_schema, join_name))
    if join is None:
        raise ValidationError({"source.through": [_table_refusal(conn, connection, join_schema, join_name)]})
    missing = _privileges_missing(conn, connection, join_schema, join_name)
    if missing:
        raise ValidationError({"source.through": [missing]})
    references = dict(
        conn.execute(
            FOREIGN_KEYS, {"join": join_name, "join_schema": join_schema, "parent": name, "parent_schema": schema}
        ).fetchall()
    )
    candidates = list(references)
    column = source.get("column")
    if column is None:
        if len(candidates) != 1:
            raise ValidationError(
                {
                    "source.column": [
                        f"{join_schema}.{join_name} has {len(candidates)} single-column foreign keys to {schema}.{name}: "
                        "name the one to follow."
                    ]
                }
            )
        column = candidates[0]
    elif column not in candidates:
        raise ValidationError(
            {"source.column": [f"{column} is not a foreign key from {join_schema}.{join_name} to {schema}.{name}."]}
        )
    if rows_from is not None:  # the events carry the parent's values of the referenced column
        rows_from["key"] = [references[column]]
        rows_from["key_types"] = _types(conn, schema, name, [references[column]], base_only=True)
    operations = tuple(op for event, op in RELATION_EVENTS.items() if event in events)
    key = tuple(join["primary_key"]) or (column,)
    types = _types(conn, join_schema, join_name, list(dict.fromkeys(key + (column,))))
    capture = Capture(
        schema=join_schema,
        table=join_name,
        primary_key=key,
        operations=operations,
        relation_column=column,
        reported_table=table_display(schema, name),
        types=_canonical(types),
    )
    normalized = {
        "connection": str(connection.id),
        "table": table_display(schema, name),
        "events": [e for e in RELATION_EVENTS if e in events],
        "through": f"{join_schema}.{join_name}",
        "column": column,
    }
    return normalized, capture
