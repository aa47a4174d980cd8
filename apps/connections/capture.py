"""Capture: the event log and triggers Rowbell installs in a customer database.

Design (measured in shared/DESIGN.md): one STATEMENT-level trigger per table and operation, reading the
statement's transition table and writing ONE event_log row per statement with the primary keys of the
rows it changed. A 1,000-row INSERT costs one log row, not 1,000; a statement that changed nothing
relevant writes nothing. Updates limited to some columns compare OLD and NEW in the function
(PostgreSQL refuses transition tables on column-specific triggers).

Every object Rowbell creates is named `rb_<hash>_...`, the hash covering what the capture captures, so
that installs are idempotent and drift (a missing or unused trigger) is visible. Trigger functions are SECURITY
DEFINER, owned by Rowbell's user, with a fixed search_path: writers of the watched tables need no
grants on Rowbell's schema.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import dataclass, field

import psycopg
from psycopg import sql

from .checks import table_privileges_check
from .conditions import condition_sql
from .introspection import operator_sql
from .names import table_display

PREFIX = "rb_"
# The LISTEN/NOTIFY wake-up: a trigger that logged something notifies this channel. PostgreSQL folds
# identical notifications of a transaction into one, so it is at most one per statement.
NOTIFY_CHANNEL = "rowbell_events"


def _notify_enabled() -> bool:
    from django.conf import settings

    return settings.ROWBELL_CAPTURE_NOTIFY


@dataclass(frozen=True)
class Capture:
    """What to capture from one table: operations, and for updates optionally the columns that matter."""

    schema: str
    table: str
    primary_key: tuple[str, ...]
    operations: tuple[str, ...]
    update_columns: tuple[str, ...] = field(default_factory=tuple)
    # Classification captures: a named predicate (canonical JSON of a structured condition) and the
    # transitions to log, "entered" (false to true) and/or "left" (true to false).
    classification: str = ""
    predicate: str = ""
    transitions: tuple[str, ...] = field(default_factory=tuple)
    # Relation captures sit on a join table and report the parent ids (this column) against the
    # parent table: an insert is "added", a delete "removed".
    relation_column: str = ""
    reported_table: str = ""
    # How to compare the columns a capture reads (canonical JSON: {column: {"base": type, "eq": bool,
    # "order": bool}}), from the table as it was when the source was saved. Not part of the name: it says
    # how, not what.
    types: str = ""

    @property
    def name(self) -> str:
        # Only what is captured names a capture; how (function bodies, NOTIFY or not) may change under the
        # same name, rewritten by `triggers install`, so events and endpoints keep matching.
        definition = json.dumps(
            [
                self.schema,
                self.table,
                self.primary_key,
                self.operations,
                self.update_columns,
                self.classification,
                self.predicate,
                self.transitions,
                self.relation_column,
                self.reported_table,
            ]
        )
        return PREFIX + hashlib.sha256(definition.encode()).hexdigest()[:12]

    @property
    def qualified_table(self) -> str:
        return table_display(self.schema, self.table)

    def to_spec(self) -> dict:
        return {
            "schema": self.schema,
            "table": self.table,
            "primary_key": list(self.primary_key),
            "operations": list(self.operations),
            "update_columns": list(self.update_columns),
            "classification": self.classification,
            "predicate": self.predicate,
            "transitions": list(self.transitions),
            "relation_column": self.relation_column,
            "reported_table": self.reported_table,
            "types": self.types,
        }

    @classmethod
    def from_spec(cls, spec: dict) -> Capture:
        return cls(
            schema=spec["schema"],
            table=spec["table"],
            primary_key=tuple(spec["primary_key"]),
            operations=tuple(spec["operations"]),
            update_columns=tuple(spec.get("update_columns", ())),
            classification=spec.get("classification", ""),
            predicate=spec.get("predicate", ""),
            transitions=tuple(spec.get("transitions", ())),
            relation_column=spec.get("relation_column", ""),
            reported_table=spec.get("reported_table", ""),
            types=spec.get("types", ""),
        )


EVENT_LOG_DDL = """
CREATE TABLE IF NOT EXISTS {schema}.event_log (
    -- Cached identity values: each writing session takes 100 at a time instead of touching the sequence
    -- per statement. Ids then interleave across sessions; reading orders by (xid, id) all the same.
    id bigint GENERATED ALWAYS AS IDENTITY (CACHE 100),
    xid xid8 NOT NULL DEFAULT pg_current_xact_id(),
    captured_at timestamptz NOT NULL DEFAULT now(),
    capture text NOT NULL,
    table_name text NOT NULL,
    op text NOT NULL,
    ids jsonb NOT NULL,
    -- Set on `error` events (a capture that could not evaluate) and on `truncate` events of a partition.
    detail jsonb,
    -- The reading order is the only index: one index to maintain per logged statement.
    PRIMARY KEY (xid, id)
);
"""

# The operations a capture's triggers fire on. Updates of a relation's join table (a link moved to another
# parent) and TRUNCATE (every row removed) are captured by every capture that reports removals.
REFERENCING = {
    "insert": "REFERENCING NEW TABLE AS new_rows",
    "update": "REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows",
    "delete": "REFERENCING OLD TABLE AS old_rows",
    "truncate": "",
}


def _referencing(capture: Capture, op: str) -> str:
    """The transition tables a trigger declares: only those its function reads (PostgreSQL collects every
    declared one, at a cost per changed row)."""
    if op == "update" and not capture.update_columns and not capture.classification and not capture.relation_column:
        return "REFERENCING NEW TABLE AS new_rows"
    return REFERENCING[op]


def trigger_operations(capture: Capture) -> tuple[str, ...]:
    """The operations whose triggers implement `capture` (a superset of `capture.operations`)."""
    ops = list(capture.operations)
    if capture.relation_column and "update" not in ops:
        ops.append("update")
    removes = "delete" in capture.operations if not capture.classification else "left" in capture.transitions
    if removes:
        ops.append("truncate")
    return tuple(ops)


def _column_types(capture: Capture) -> dict:
    return json.loads(capture.types) if capture.types else {}


def _key(alias: str, capture: Capture) -> list[sql.Composable]:
    return [sql.Identifier(alias, c) for c in capture.primary_key]


def _ids_expression(capture: Capture, alias: str) -> sql.Composable:
    if capture.relation_column:
        return sql.SQL("pg_catalog.jsonb_agg(DISTINCT {})").format(sql.Identifier(alias, capture.relation_column))
    columns = _key(alias, capture)
    if len(columns) == 1:
        return sql.SQL("pg_catalog.jsonb_agg({})").format(columns[0])
    return sql.SQL("pg_catalog.jsonb_agg(pg_catalog.jsonb_build_array({}))").format(sql.SQL(", ").join(columns))


def _equal(capture: Capture, left: sql.Composable, right: sql.Composable, column: str) -> sql.Composable:
    schema = _column_types(capture).get(column, {}).get("ops", {}).get("=")
    return sql.SQL("{} {} {}").format(left, operator_sql("=", schema), right)


def _pairing(capture: Capture, left: str, right: str) -> sql.Composable:
    """`left` rows LEFT JOINed to `right` rows of the same key; an unmatched row (its key changed, or it is
    new) has a NULL key on the right, as key columns are never NULL."""
    on = sql.SQL(" AND ").join(
        _equal(capture, sql.Identifier(left, c), sql.Identifier(right, c), c) for c in capture.primary_key
    )
    table = {"n": "new_rows", "o": "old_rows"}
    return sql.SQL("FROM {} {} LEFT JOIN {} {} ON {}").format(
        sql.Identifier(table[left]), sql.Identifier(left), sql.Identifier(table[right]), sql.Identifier(right), on
    )


def _unmatched(capture: Capture, alias: str) -> sql.Composable:
    return sql.SQL("{} IS NULL").format(sql.Identifier(alias, capture.primary_key[0]))


def _distinct(capture: Capture, new: sql.Composable, old: sql.Composable, column: str) -> sql.Composable:
    """`new` and `old` values of `column` differ, in a form that exists for every type: the type's own
    equality where it has one (an extension's operator named with its schema: the function's search_path is
    pg_catalog alone), its text form otherwise (json, point, xml...)."""
    types = _column_types(capture)
    info = types.get(column, {})
    if column in types and not info.get("eq", True):
        return sql.SQL("{}::pg_catalog.text IS DISTINCT FROM {}::pg_catalog.text").format(new, old)
    if info.get("ops", {}).get("="):
        return sql.SQL("NOT (({n} IS NULL AND {o} IS NULL) OR ({eq}) IS TRUE)").format(
            n=new, o=old, eq=_equal(capture, new, old, column)
        )
    return sql.SQL("{} IS DISTINCT FROM {}").format(new, old)


def _changed(capture: Capture) -> sql.Composable:
    """Any of the listed columns differs between OLD and NEW (see _distinct)."""
    return (
        sql.SQL("(")
        + sql.SQL(" OR ").join(
            _distinct(capture, sql.Identifier("n", c), sql.Identifier("o", c), c) for c in capture.update_columns
        )
        + sql.SQL(")")
    )


def _selections(capture: Capture, op: str) -> list[tuple[str, str, sql.Composable]]:
    """(event op, alias whose key is reported, FROM ... WHERE ...) for each event the trigger of `op` may log."""
    if op == "truncate":
        return []
    if capture.classification:
        predicate, types = json.loads(capture.predicate), _column_types(capture)
        new, old = condition_sql(predicate, "n", types), condition_sql(predicate, "o", types)
        if op == "insert":  # a new row that satisfies the predicate has entered
            return [("entered", "n", sql.SQL("FROM new_rows n WHERE {} IS TRUE").format(new))]
        if op == "delete":  # a deleted row that satisfied it has left
            return [("left", "o", sql.SQL("FROM old_rows o WHERE {} IS TRUE").format(old))]
        # Rows are identified by their key: a row whose key changed left under the old key and entered under
        # the new one, as if deleted and inserted.
        out: list[tuple[str, str, sql.Composable]] = []
        if "entered" in capture.transitions:
            out.append(
                (
                    "entered",
                    "n",
                    sql.SQL("{} WHERE {} IS TRUE AND ({} OR {} IS NOT TRUE)").format(
                        _pairing(capture, "n", "o"), new, _unmatched(capture, "o"), old
                    ),
                )
            )
        if "left" in capture.transitions:
            out.append(
                (
                    "left",
                    "o",
                    sql.SQL("{} WHERE {} IS TRUE AND ({} OR {} IS NOT TRUE)").format(
                        _pairing(capture, "o", "n"), old, _unmatched(capture, "n"), new
                    ),
                )
            )
        return out
    if capture.relation_column:
        column = capture.relation_column
        if op == "insert":
            return [("added", "n", sql.SQL("FROM new_rows n"))]
        if op == "delete":
            return [("removed", "o", sql.SQL("FROM old_rows o"))]
        # An UPDATE that moves a link to another parent removes it from one and adds it to the other.
        moved: list[tuple[str, str, sql.Composable]] = []
        for event, alias, other, needed in (("added", "n", "o", "insert"), ("removed", "o", "n", "delete")):
            if needed in capture.operations:
                moved.append(
                    (
                        event,
                        alias,
                        sql.SQL("{} WHERE {} OR {}").format(
                            _pairing(capture, alias, other),
                            _unmatched(capture, other),
                            _distinct(capture, sql.Identifier(alias, column), sql.Identifier(other, column), column),
                        ),
                    )
                )
        return moved
    if op == "insert":
        return [("insert", "n", sql.SQL("FROM new_rows n"))]
    if op == "delete":
        return [("delete", "o", sql.SQL("FROM old_rows o"))]
    if not capture.update_columns:  # every updated row counts, under its new key if the key changed
        return [("update", "n", sql.SQL("FROM new_rows n"))]
    # A row whose key changed cannot be paired with its old values: it is reported, under its new key.
    return [
        (
            "update",
            "n",
            sql.SQL("{} WHERE {} OR {}").format(
                _pairing(capture, "n", "o"), _unmatched(capture, "o"), _changed(capture)
            ),
        )
    ]


_NULL = sql.SQL("NULL")


def _insert(
    schema: str, capture: Capture, op: sql.Composable, ids: sql.Composable, detail: sql.Composable = _NULL
) -> sql.Composable:
    return sql.SQL(
        "INSERT INTO {log} (capture, table_name, op, ids, detail) VALUES ({capture}, {table}, {op}, {ids}, {detail})"
    ).format(
        log=sql.Identifier(schema, "event_log"),
        capture=sql.Literal(capture.name),
        table=sql.Literal(capture.reported_table or capture.qualified_table),
        op=op,
        ids=ids,
        detail=detail,
    )


def _notify() -> sql.Composable:
    if not _notify_enabled():
        return sql.SQL("")
    return sql.SQL("PERFORM pg_catalog.pg_notify({}, ''); ").format(sql.Literal(NOTIFY_CHANNEL))


def _log_guard(schema: str) -> sql.Composable:
    """Nothing to log into (someone dropped or renamed Rowbell's event log): the customer's write goes on,
    and the health tick reports it and installs the log again. A name lookup, about a microsecond; writing
    the event inside a guarded block instead would give every statement a subtransaction id."""
    return sql.SQL("IF pg_catalog.to_regclass({}) IS NULL THEN RETURN NULL; END IF;").format(
        sql.Literal(sql.Identifier(schema, "event_log").as_string(None))
    )


def _function_body(capture: Capture, op: str, schema: str) -> sql.Composable:
    """The trigger function of one operation. It never raises for what a customer's schema or migration
    can do (a column renamed or dropped, a type changed, a literal its new type rejects): evaluation runs
    in a block that catches every error but a cancel, and logs an `error` event instead, with the keys it
    can still read and the reason, so the customer's write goes on and Rowbell reports the drift.

    The block only reads (it assigns no subtransaction id, so a long transaction never overflows the
    subtransaction cache); the event rows are written after it, in the customer's transaction.
    """
    if op == "truncate":
        # Row ids are gone with a TRUNCATE: one event says every row was removed. A TRUNCATE of a partitioned
        # table fires on its partitions too: one event per transaction for the whole table is enough.
        log: sql.Composable = sql.Identifier(schema, "event_log")
        # Compared by name, never by a regclass cast that a renamed table would make fail.
        whole = sql.SQL("TG_TABLE_SCHEMA = {} AND TG_TABLE_NAME = {}").format(
            sql.Literal(capture.schema), sql.Literal(capture.table)
        )
        partition = sql.SQL(
            "CASE WHEN {} THEN NULL ELSE pg_catalog.jsonb_build_object('partition', "
            "pg_catalog.quote_ident(TG_TABLE_SCHEMA) || '.' || pg_catalog.quote_ident(TG_TABLE_NAME)) "
            "END"
        ).format(whole)
        # Skipped only when this capture's last event in the transaction already says the whole table was
        # emptied (a partitioned table's partitions fire after it); a later TRUNCATE after new rows is logged.
        op = "cleared" if capture.relation_column else "truncate"
        return _log_guard(schema) + sql.SQL(
            " IF (SELECT op = {op} AND detail IS NULL FROM {log} WHERE xid = pg_catalog.pg_current_xact_id() "
            "AND capture = {capture} ORDER BY id DESC LIMIT 1) IS NOT TRUE THEN {insert}; {notify}END IF;"
        ).format(
            log=log,
            capture=sql.Literal(capture.name),
            notify=_notify(),
            op=sql.Literal(op),
            insert=_insert(schema, capture, sql.Literal(op), sql.SQL("'[]'::pg_catalog.jsonb"), partition),
        )
    selections = _selections(capture, op)
    variables = [sql.Identifier(f"v{i}") for i in range(len(selections))]
    evaluate = sql.SQL(" ").join(
        sql.SQL("SELECT {ids} INTO {var} {source};").format(ids=_ids_expression(capture, alias), var=var, source=source)
        for var, (_, alias, source) in zip(variables, selections)
    )
    # What can still be read when evaluation failed: the keys of the rows the statement changed.
    fallback_alias, fallback_table = ("o", "old_rows") if op == "delete" else ("n", "new_rows")
    fallback = sql.SQL("SELECT {ids}, pg_catalog.count(*) INTO keys, changed FROM {table} {alias};").format(
        ids=_ids_expression(capture, fallback_alias),
        table=sql.Identifier(fallback_table),
        alias=sql.Identifier(fallback_alias),
    )
    error = sql.SQL(
        "EXCEPTION WHEN OTHERS THEN "
        "GET STACKED DIAGNOSTICS failure = MESSAGE_TEXT; "
        "BEGIN {fallback} EXCEPTION WHEN OTHERS THEN keys := NULL; "
        "BEGIN SELECT pg_catalog.count(*) INTO changed FROM {table}; EXCEPTION WHEN OTHERS THEN changed := NULL; END; "
        "END; "
        "{insert}; {notify}RETURN NULL;"
    ).format(
        fallback=fallback,
        table=sql.Identifier(fallback_table),
        notify=_notify(),
        insert=_insert(
            schema,
            capture,
            sql.Literal("error"),
            sql.SQL("COALESCE(keys, '[]'::pg_catalog.jsonb)"),
            sql.SQL(
                "pg_catalog.jsonb_build_object('op', {}, 'sqlstate', SQLSTATE, 'message', failure, 'rows', changed)"
            ).format(sql.Literal(op)),
        ),
    )
    log = sql.SQL(" ").join(
        sql.SQL("IF {var} IS NOT NULL THEN {insert}; logged := true; END IF;").format(
            var=var, insert=_insert(schema, capture, sql.Literal(event), var)
        )
        for var, (event, _, _) in zip(variables, selections)
    )
    notify = sql.SQL("IF logged THEN {}END IF;").format(_notify()) if _notify_enabled() else sql.SQL("")
    declare = sql.SQL(" ").join(sql.SQL("{} pg_catalog.jsonb;").format(v) for v in variables)
    return sql.SQL(
        "DECLARE {declare} keys pg_catalog.jsonb; changed pg_catalog.int8; failure pg_catalog.text; "
        "logged pg_catalog.bool := false; "
        "BEGIN {guard} BEGIN {evaluate} {error} END; {log} {notify}"
    ).format(declare=declare, evaluate=evaluate, error=error, log=log, notify=notify, guard=_log_guard(schema))


class _DollarQuoted(sql.Composable):
    """A function body in dollar quotes whose tag does not occur in the body, so that no value inside
    (sql.Literal quotes ' but not $) can end the quoting early."""

    def __init__(self, body: sql.Composable):
        super().__init__(body)
        self._body = body

    def as_bytes(self, context=None) -> bytes:
        body = self._body.as_bytes(context)
        while True:
            tag = f"$rb_{secrets.token_hex(6)}$".encode()
            if tag not in body:
                return tag + body + tag


def function_source(capture: Capture, op: str, schema: str) -> str:
    """The plpgsql source of one trigger function, as `pg_proc.prosrc` stores it: an install compares it to
    what is there and rewrites only what differs."""
    body = _function_body(capture, op, schema)
    if op == "truncate":
        return sql.SQL(" BEGIN {} RETURN NULL; END ").format(body).as_string(None)
    return sql.SQL(" {} RETURN NULL; END ").format(body).as_string(None)


def _pinned(capture: Capture, op: str) -> bool:
    """Whether the function's body compares values: operators cannot all be schema-qualified, so such a body
    pins its search_path (a configuration change per call). The others name every object with its schema and
    skip it."""
    return (
        op == "truncate"
        or bool(capture.classification)
        or (op == "update" and bool(capture.update_columns or capture.relation_column))
    )


def function_ddl(capture: Capture, op: str, schema: str) -> sql.Composable:
    """CREATE OR REPLACE FUNCTION for one operation of a capture."""
    # SECURITY DEFINER: writers of the table need no rights on Rowbell's schema. A definer function must not
    # resolve names through the caller's search_path: see _pinned.
    return sql.SQL(
        "CREATE OR REPLACE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER {pin}AS {quoted}"
    ).format(
        function=sql.Identifier(schema, f"{capture.name}_{op}"),
        pin=sql.SQL("SET search_path = pg_catalog, pg_temp " if _pinned(capture, op) else ""),
        quoted=_DollarQuoted(sql.SQL(function_source(capture, op, schema))),
    )


def trigger_ddl(capture: Capture, op: str, schema: str, table: tuple[str, str]) -> sql.Composable:
    """CREATE OR REPLACE TRIGGER for one operation of a capture on one table (the watched table or one of
    its partitions). OR REPLACE needs only the TRIGGER privilege (DROP TRIGGER would need ownership)."""
    referencing = _referencing(capture, op)
    return sql.SQL(
        "CREATE OR REPLACE TRIGGER {trigger} AFTER {event} ON {table} "
        + referencing
        + " FOR EACH STATEMENT EXECUTE FUNCTION {function}()"
    ).format(
        trigger=sql.Identifier(f"{capture.name}_{op}"),
        event=sql.SQL(op.upper()),
        table=sql.Identifier(*table),
        function=sql.Identifier(schema, f"{capture.name}_{op}"),
    )


def capture_ddl(capture: Capture, schema: str) -> list[sql.Composable]:
    """The statements that install one capture on its table alone (functions and triggers), each idempotent."""
    statements = []
    for op in trigger_operations(capture):
        statements.append(function_ddl(capture, op, schema))
        statements.append(trigger_ddl(capture, op, schema, (capture.schema, capture.table)))
    return statements


INSTALLATION_DDL = """
CREATE TABLE IF NOT EXISTS {schema}.installation (
    -- The one Rowbell connection that owns this schema: a second connection to the same database and
    -- schema would call the first one's triggers unused, and a prune would retire them.
    connection_id uuid PRIMARY KEY,
    product_id uuid NOT NULL,
    claimed_at timestamptz NOT NULL DEFAULT now()
);
"""


def installation_owner(conn, *, schema: str) -> tuple[str | None, bool]:
    """(id of the connection that owns `schema`, or None; whether an event log exists there)."""
    log = conn.execute("SELECT to_regclass(%s)", [sql.Identifier(schema, "event_log").as_string(conn)]).fetchone()[0]
    table = conn.execute("SELECT to_regclass(%s)", [sql.Identifier(schema, "installation").as_string(conn)]).fetchone()[
        0
    ]
    if table is None:
        return None, log is not None
    row = conn.execute(
        sql.SQL("SELECT connection_id::text FROM {} ORDER BY claimed_at DESC LIMIT 1").format(
            sql.Identifier(schema, "installation")
        )
    ).fetchone()
    return (row[0] if row else None), log is not None


def installation_claim(conn, *, schema: str, connection_id, product_id) -> None:
    """Record `connection_id` as the owner of `schema` (creating the schema if needed), in one transaction."""
    with conn.transaction():
        if not conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", [schema]).fetchone():
            conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        table = sql.Identifier(schema, "installation")
        conn.execute(sql.SQL(INSTALLATION_DDL).format(schema=sql.Identifier(schema)))
        conn.execute(sql.SQL("DELETE FROM {} WHERE connection_id <> %s").format(table), [str(connection_id)])
        conn.execute(
            sql.SQL("INSERT INTO {} (connection_id, product_id) VALUES (%s, %s) ON CONFLICT DO NOTHING").format(table),
            [str(connection_id), str(product_id)],
        )


def installation_release(conn, *, schema: str, connection_id) -> None:
    """Forget `connection_id` as the owner of `schema` (a deleted connection), so another may claim it."""
    if conn.execute("SELECT to_regclass(%s)", [sql.Identifier(schema, "installation").as_string(conn)]).fetchone()[0]:
        conn.execute(
            sql.SQL("DELETE FROM {} WHERE connection_id = %s").format(sql.Identifier(schema, "installation")),
            [str(connection_id)],
        )


class CaptureConflict(Exception):
    """Another Rowbell schema's capture already owns a trigger of the same name on a watched table."""


# The watched table and every partition below it, from the catalog alone: no function here takes a lock
# (pg_partition_tree would lock each partition for the rest of the transaction).
TABLES_OF = """
WITH RECURSIVE tree(oid) AS (
    SELECT c.oid FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname = %(schema)s AND c.relname = %(table)s AND c.relkind IN ('r', 'p')
    UNION ALL
    SELECT i.inhrelid FROM pg_catalog.pg_inherits i JOIN tree t ON i.inhparent = t.oid
    JOIN pg_catalog.pg_class c ON c.oid = i.inhrelid WHERE c.relispartition
)
SELECT n.nspname, c.relname, c.oid FROM tree JOIN pg_catalog.pg_class c ON c.oid = tree.oid
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
"""

TRIGGERS_OF = """
SELECT t.tgrelid, t.tgname, pn.nspname, p.proname, t.tgtype, t.tgoldtable, t.tgnewtable, t.tgqual IS NOT NULL,
       t.tgenabled
FROM pg_catalog.pg_trigger t JOIN pg_catalog.pg_proc p ON p.oid = t.tgfoid
JOIN pg_catalog.pg_namespace pn ON pn.oid = p.pronamespace
WHERE t.tgrelid = ANY(%(tables)s) AND NOT t.tgisinternal AND t.tgname LIKE 'rb\\_%%'
"""

# Triggers of a capture's functions on tables outside its tree: a partition detached since.
STRAYS = """
SELECT n.nspname, c.relname, t.tgname, t.tgtype
FROM pg_catalog.pg_trigger t JOIN pg_catalog.pg_class c ON c.oid = t.tgrelid
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
JOIN pg_catalog.pg_proc p ON p.oid = t.tgfoid JOIN pg_catalog.pg_namespace pn ON pn.oid = p.pronamespace
WHERE pn.nspname = %(schema)s AND p.proname LIKE %(prefix)s AND NOT (t.tgrelid = ANY(%(tables)s))
"""

_TGTYPE = {"insert": 4, "delete": 8, "update": 16, "truncate": 32}
# pg_trigger.tgenabled: D disabled (ALTER TABLE ... DISABLE TRIGGER), R fires only in replica sessions.
DISABLED = {"D": "disabled", "R": "set to fire only for replication (ENABLE REPLICA TRIGGER)"}


class CaptureMissingTable(Exception):
    """The watched table of a capture does not exist (renamed or dropped)."""


def capture_tables(conn, capture: Capture) -> list[tuple[str, str, int]]:
    """(schema, table, oid) of the watched table and, when it is partitioned, of every partition at every
    level: a statement that names a partition fires only that partition's statement triggers. Empty when
    the table does not exist."""
    return conn.execute(TABLES_OF, {"schema": capture.schema, "table": capture.table}).fetchall()


def _trigger_in_place(found: tuple | None, capture: Capture, op: str, schema: str) -> bool:
    """Whether `found` (a TRIGGERS_OF row) is this capture's trigger for `op`, as install makes it (enabled
    or not: see trigger_disabled)."""
    if found is None:
        return False
    _, _, function_schema, function, tgtype, old, new, qualified = found[:8]
    referencing = _referencing(capture, op)
    return (
        function_schema == schema
        and function == f"{capture.name}_{op}"
        and not qualified
        and tgtype & _TGTYPE[op]
        and not tgtype & 1  # a statement trigger for this event
        and (old == "old_rows") == ("OLD TABLE" in referencing)
        and (new == "new_rows") == ("NEW TABLE" in referencing)
    )


def trigger_disabled(found: tuple | None) -> str:
    """Why a trigger in place does not fire for the customer's sessions ("" when it does)."""
    return DISABLED.get(found[8], "") if found is not None else ""


def _log_ensure(conn, schema: str, changed: list[str]) -> None:
    # Even CREATE SCHEMA IF NOT EXISTS needs CREATE on the database, which a user whose schema the DBA
    # created (the minimal set-up printed by connection_grants) does not have.
    if not conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", [schema]).fetchone():
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    log = sql.Identifier(schema, "event_log")
    if conn.execute("SELECT to_regclass(%s)", [log.as_string(conn)]).fetchone()[0] is None:
        conn.execute(sql.SQL(EVENT_LOG_DDL).format(schema=sql.Identifier(schema)))
        changed.append("event_log")
        return
    # Logs installed by earlier versions get what this one needs. ALTER TABLE locks the log (and so every
    # watched table's writers): only when something is missing.
    columns = {
        name: cache
        for name, cache in conn.execute(
            "SELECT a.attname, s.seqcache FROM pg_attribute a LEFT JOIN pg_depend d ON d.refobjid = a.attrelid "
            "AND d.refobjsubid = a.attnum AND d.deptype = 'i' LEFT JOIN pg_sequence s ON s.seqrelid = d.objid "
            "WHERE a.attrelid = %s::regclass AND a.attnum > 0 AND NOT a.attisdropped",
            [log.as_string(conn)],
        )
    }
    if "detail" not in columns:
        conn.execute(sql.SQL("ALTER TABLE {} ADD COLUMN detail jsonb").format(log))
        changed.append("event_log.detail")
    if columns.get("id") not in (None, 100):
        conn.execute(sql.SQL("ALTER TABLE {} ALTER COLUMN id SET CACHE 100").format(log))


def _lock_timeout(conn, seconds: float) -> None:
    conn.execute(sql.SQL("SET LOCAL lock_timeout = {}").format(sql.Literal(f"{int(seconds * 1000)}ms")))


def _capture_install(conn, schema: str, capture: Capture, sources: dict, changed: list[str], *, enable: bool) -> None:
    tables = capture_tables(conn, capture)
    if not tables:
        raise CaptureMissingTable(f"Table {capture.qualified_table} does not exist (renamed or dropped).")
    oids = [t[2] for t in tables]
    existing = {(row[0], row[1]): row for row in conn.execute(TRIGGERS_OF, {"tables": oids})}
    noop = sql.Identifier(schema, NOOP_FUNCTION)
    for op in trigger_operations(capture):
        function = f"{capture.name}_{op}"
        expected = (function_source(capture, op, schema), _pinned(capture, op))
        if sources.get(function) != expected:
            conn.execute(function_ddl(capture, op, schema))
            sources[function] = expected
            changed.append(f"function {function}")
        for table_schema, table, oid in tables:
            found = existing.get((oid, function))
            if found is not None and found[2] != schema and found[3] != NOOP_FUNCTION:
                raise CaptureConflict(
                    f"{table_schema}.{table} already has trigger {function} of the Rowbell schema "
                    f"{found[2]}: another connection watches this database. Use that connection."
                )
            in_place = _trigger_in_place(found, capture, op, schema)
            if not in_place or (enable and trigger_disabled(found)):
                conn.execute(trigger_ddl(capture, op, schema, (table_schema, table)))
                changed.append(f"trigger {table_schema}.{table}.{function}")
    # A partition detached since keeps the capture's triggers: they would report its rows as the watched
    # table's. Retired in place (as captures_prune does).
    strays = conn.execute(STRAYS, {"schema": schema, "prefix": f"{capture.name}\\_%", "tables": oids}).fetchall()
    if strays:
        _noop_ensure(conn, schema)
    for table_schema, table, trigger, tgtype in strays:
        event = next(op for op, bit in _TGTYPE.items() if tgtype & bit).upper()
        conn.execute(
            sql.SQL(
                "CREATE OR REPLACE TRIGGER {} AFTER {} ON {} FOR EACH STATEMENT WHEN (false) EXECUTE FUNCTION {}()"
            ).format(sql.Identifier(trigger), sql.SQL(event), sql.Identifier(table_schema, table), noop)
        )
        changed.append(f"retired {table_schema}.{table}.{trigger}")


def _noop_ensure(conn, schema: str) -> None:
    conn.execute(
        sql.SQL(
            "CREATE OR REPLACE FUNCTION {}() RETURNS trigger LANGUAGE plpgsql "
            "SET search_path = pg_catalog AS $$ BEGIN RETURN NULL; END $$"
        ).format(sql.Identifier(schema, NOOP_FUNCTION))
    )


def captures_install(
    conn, *, schema: str, captures: list[Capture], lock_timeout: float = 2.0, each: bool = False, enable: bool = True
) -> list[str]:
    """Install the schema, the event log and every capture (on each watched table and its partitions).
    Returns what it changed, as "function x" / "trigger table.x" (empty when everything was in place).

    With `each=False` (a publish, a subscription) everything is ONE transaction: all or nothing. With
    `each=True` (the health tick, a repair) the log and each capture get a transaction of their own, so
    that one capture that cannot be installed (its table renamed, a partition without the grant) does not
    keep the others from being repaired; the failures are returned as "failed <capture>: <reason>".

    Repeat-safe and cheap when nothing changed: a function is rewritten only when its source differs and a
    trigger is created only when it is missing or different, because CREATE TRIGGER takes a lock that blocks
    the table's writers; partitions are found in the catalog without locks. A trigger someone disabled is
    re-enabled only with `enable` (an operator's repair; the health tick reports it instead). Every lock waits
    at most `lock_timeout` seconds, so an install never queues the customer's writers behind a long
    transaction: it fails instead (psycopg.errors.LockNotAvailable). Raises CaptureConflict when another
    Rowbell schema's capture owns a trigger of the same name on one of the tables, CaptureMissingTable when
    a table does not exist (with each=False).
    """
    changed: list[str] = []

    def prepared() -> dict:
        return {
            name: (source, pinned)
            for name, source, pinned in conn.execute(
                "SELECT p.proname, p.prosrc, p.proconfig IS NOT NULL FROM pg_proc p "
                "JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = %s AND p.proname LIKE 'rb\\_%%'",
                [schema],
            ).fetchall()
        }

    if not each:
        with conn.transaction():
            _lock_timeout(conn, lock_timeout)
            _log_ensure(conn, schema, changed)
            sources = prepared()
            for capture in captures:
                _capture_install(conn, schema, capture, sources, changed, enable=enable)
        return changed
    with conn.transaction():
        _lock_timeout(conn, lock_timeout)
        _log_ensure(conn, schema, changed)
    sources = prepared()
    for capture in captures:
        try:
            with conn.transaction():
                _lock_timeout(conn, lock_timeout)
                _capture_install(conn, schema, capture, sources, changed, enable=enable)
        except (
            CaptureMissingTable,
            CaptureConflict,
            psycopg.errors.LockNotAvailable,
            psycopg.errors.InsufficientPrivilege,
        ) as exc:
            sources = prepared()  # what the failed transaction wrote is gone
            reason = str(exc).strip().splitlines()[0]
            if isinstance(exc, psycopg.errors.InsufficientPrivilege):
                check = table_privileges_check(
                    conn, schema=capture.schema, table=capture.table, name=capture.qualified_table
                )
                reason = f"{reason}. {check.detail}" if not check.ok else reason
            elif isinstance(exc, psycopg.errors.LockNotAvailable):
                reason = (
                    "a table is locked by a long-running transaction; the install gave up rather than make "
                    "writers wait, and the next health tick tries again"
                )
            changed.append(f"failed {capture.name}: {reason}")
    return changed


def captures_installed(conn, *, schema: str) -> dict[str, list[str]]:
    """Rowbell's live (not retired) triggers: {capture name: [table.trigger, ...]}."""
    out: dict[str, list[str]] = {}
    for trigger, table_schema, table, function, _ in _rowbell_triggers(conn, schema):
        if function != NOOP_FUNCTION:
            out.setdefault(trigger.rsplit("_", 1)[0], []).append(f"{table_schema}.{table}.{trigger}")
    return out


NOOP_FUNCTION = "rb_retired"


def captures_prune(conn, *, schema: str, keep: list[Capture], lock_timeout: float = 2.0) -> list[str]:
    """Retire Rowbell triggers no current capture uses; return them as table.trigger.

    Dropping a trigger needs ownership of its table, which Rowbell's user does not have; so an unused
    trigger is replaced (CREATE OR REPLACE needs only TRIGGER) by an inert one, `WHEN (false)` without
    transition tables, that costs next to nothing. `retired_drop_statements` gives the DROP statements a
    table owner may run to remove them for good.
    """
    wanted = {c.name for c in keep}
    retired, functions = [], set()
    with conn.transaction():
        conn.execute(sql.SQL("SET LOCAL lock_timeout = {}").format(sql.Literal(f"{int(lock_timeout * 1000)}ms")))
        noop = sql.Identifier(schema, NOOP_FUNCTION)
        _noop_ensure(conn, schema)
        for trigger, table_schema, table, function, event in _rowbell_triggers(conn, schema):
            if trigger.rsplit("_", 1)[0] in wanted or function == NOOP_FUNCTION:
                continue
            conn.execute(
                sql.SQL(
                    "CREATE OR REPLACE TRIGGER {} AFTER {} ON {} FOR EACH STATEMENT WHEN (false) EXECUTE FUNCTION {}()"
                ).format(sql.Identifier(trigger), sql.SQL(event), sql.Identifier(table_schema, table), noop)
            )
            functions.add(function)
            retired.append(f"{table_schema}.{table}.{trigger}")
        # After every trigger that used them (a partitioned table's partitions share its functions).
        for function in sorted(functions):
            conn.execute(sql.SQL("DROP FUNCTION IF EXISTS {}()").format(sql.Identifier(schema, function)))
    return retired


def retired_drop_statements(conn, *, schema: str) -> list[str]:
    """DROP TRIGGER statements for retired triggers, for a table owner to run."""
    return [
        sql.SQL("DROP TRIGGER {} ON {};").format(sql.Identifier(t), sql.Identifier(s, r)).as_string(conn)
        for t, s, r, function, _ in _rowbell_triggers(conn, schema)
        if function == NOOP_FUNCTION
    ]


def _rowbell_triggers(conn, schema: str):
    """(trigger, table schema, table, function, event) of every Rowbell trigger using `schema`'s functions."""
    return conn.execute(
        """
        SELECT t.tgname, n.nspname, c.relname, p.proname,
               CASE WHEN t.tgtype & 4 <> 0 THEN 'INSERT' WHEN t.tgtype & 8 <> 0 THEN 'DELETE'
                    WHEN t.tgtype & 32 <> 0 THEN 'TRUNCATE' ELSE 'UPDATE' END
        FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace
        JOIN pg_proc p ON p.oid = t.tgfoid JOIN pg_namespace pn ON pn.oid = p.pronamespace
        WHERE NOT t.tgisinternal AND t.tgname LIKE 'rb\\_%%' AND pn.nspname = %s
        """,
        [schema],
    ).fetchall()
