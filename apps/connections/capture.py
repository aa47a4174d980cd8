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

from psycopg import sql

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

    @property
    def name(self) -> str:
        # Only what is captured names a capture; how (function bodies, NOTIFY or not) may change under the
        # same name, rewritten by `triggers install`, so events and endpoints keep matching.
        definition = json.dumps([self.schema, self.table, self.primary_key, self.operations,
                                  self.update_columns, self.classification, self.predicate, self.transitions,
                                  self.relation_column, self.reported_table])
        return PREFIX + hashlib.sha256(definition.encode()).hexdigest()[:12]

    @property
    def qualified_table(self) -> str:
        return f"{self.schema}.{self.table}"

    def to_spec(self) -> dict:
        return {"schema": self.schema, "table": self.table, "primary_key": list(self.primary_key),
                "operations": list(self.operations), "update_columns": list(self.update_columns),
                "classification": self.classification, "predicate": self.predicate,
                "transitions": list(self.transitions), "relation_column": self.relation_column,
                "reported_table": self.reported_table}

    @classmethod
    def from_spec(cls, spec: dict) -> Capture:
        return cls(schema=spec["schema"], table=spec["table"], primary_key=tuple(spec["primary_key"]),
                   operations=tuple(spec["operations"]), update_columns=tuple(spec.get("update_columns", ())),
                   classification=spec.get("classification", ""), predicate=spec.get("predicate", ""),
                   transitions=tuple(spec.get("transitions", ())), relation_column=spec.get("relation_column", ""),
                   reported_table=spec.get("reported_table", ""))


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
    -- The reading order is the only index: one index to maintain per logged statement.
    PRIMARY KEY (xid, id)
);
"""


def _ids_expression(capture: Capture, alias: str) -> sql.Composable:
    if capture.relation_column:
        return sql.SQL("pg_catalog.jsonb_agg(DISTINCT {})").format(sql.Identifier(alias, capture.relation_column))
    columns = [sql.Identifier(alias, c) for c in capture.primary_key]
    if len(columns) == 1:
        return sql.SQL("pg_catalog.jsonb_agg({})").format(columns[0])
    return sql.SQL("pg_catalog.jsonb_agg(pg_catalog.jsonb_build_array({}))").format(sql.SQL(", ").join(columns))


def _log_insert(capture: Capture, schema: str, op: str, ids_alias: str, source: sql.Composable) -> sql.Composable:
    notify = (sql.SQL("; IF FOUND THEN PERFORM pg_catalog.pg_notify({}, '') ; END IF").format(
        sql.Literal(NOTIFY_CHANNEL))
              if _notify_enabled() else sql.SQL(""))
    return sql.SQL(
        "INSERT INTO {log} (capture, table_name, op, ids) "
        "SELECT {capture}, {table}, {op}, {ids} {source} HAVING pg_catalog.count(*) OPERATOR(pg_catalog.>) 0{notify}"
    ).format(notify=notify, log=sql.Identifier(schema, "event_log"), capture=sql.Literal(capture.name),
             table=sql.Literal(capture.reported_table or capture.qualified_table), op=sql.Literal(op),
             ids=_ids_expression(capture, ids_alias), source=source)


def _pk_join(capture: Capture) -> sql.Composable:
    join = sql.SQL(" AND ").join(sql.SQL("n.{c} = o.{c}").format(c=sql.Identifier(c)) for c in capture.primary_key)
    return sql.SQL("FROM new_rows n JOIN old_rows o ON {}").format(join)


def _function_body(capture: Capture, op: str, schema: str) -> sql.Composable:
    if capture.classification:
        from .conditions import condition_sql

        predicate = json.loads(capture.predicate)
        new, old = condition_sql(predicate, "n"), condition_sql(predicate, "o")
        statements = []
        if op == "insert":  # a new row that satisfies the predicate has entered
            statements.append(_log_insert(capture, schema, "entered", "n",
                                          sql.SQL("FROM new_rows n WHERE {} IS TRUE").format(new)))
        elif op == "delete":  # a deleted row that satisfied it has left
            statements.append(_log_insert(capture, schema, "left", "o",
                                          sql.SQL("FROM old_rows o WHERE {} IS TRUE").format(old)))
        else:
            if "entered" in capture.transitions:
                statements.append(_log_insert(capture, schema, "entered", "n", sql.SQL(
                    "{} WHERE {} IS TRUE AND {} IS NOT TRUE").format(_pk_join(capture), new, old)))
            if "left" in capture.transitions:
                statements.append(_log_insert(capture, schema, "left", "o", sql.SQL(
                    "{} WHERE {} IS TRUE AND {} IS NOT TRUE").format(_pk_join(capture), old, new)))
        return sql.SQL("; ").join(statements)
    if capture.relation_column:
        if op == "insert":
            return _log_insert(capture, schema, "added", "n", sql.SQL("FROM new_rows n"))
        return _log_insert(capture, schema, "removed", "o", sql.SQL("FROM old_rows o"))
    if op == "insert":
        return _log_insert(capture, schema, op, "n", sql.SQL("FROM new_rows n"))
    if op == "delete":
        return _log_insert(capture, schema, op, "o", sql.SQL("FROM old_rows o"))
    if not capture.update_columns:  # every updated row counts: no need to pair NEW with OLD
        return _log_insert(capture, schema, op, "n", sql.SQL("FROM new_rows n"))
    new = sql.SQL(", ").join(sql.Identifier("n", c) for c in capture.update_columns)
    old = sql.SQL(", ").join(sql.Identifier("o", c) for c in capture.update_columns)
    source = sql.SQL("{} WHERE ROW({}) IS DISTINCT FROM ROW({})").format(_pk_join(capture), new, old)
    return _log_insert(capture, schema, op, "n", source)


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


def _dollar_quoted(body: sql.Composable) -> sql.Composable:
    return _DollarQuoted(body)


def capture_ddl(capture: Capture, schema: str) -> list[sql.Composable]:
    """The statements that install one capture (functions and triggers), each idempotent."""
    statements = []
    for op in capture.operations:
        function = sql.Identifier(schema, f"{capture.name}_{op}")
        trigger = sql.Identifier(f"{capture.name}_{op}")
        table = sql.Identifier(capture.schema, capture.table)
        referencing = {"insert": "REFERENCING NEW TABLE AS new_rows",
                       "update": "REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows",
                       "delete": "REFERENCING OLD TABLE AS old_rows"}[op]
        body = sql.SQL("BEGIN {body}; RETURN NULL; END").format(body=_function_body(capture, op, schema))
        # SECURITY DEFINER: writers of the table need no rights on Rowbell's schema. A definer function must
        # not resolve names through the caller's search_path. Bodies that compare values (listed columns,
        # predicates: operators that cannot all be schema-qualified) pin it with SET, which costs a
        # configuration change per call; the others name everything with its schema and skip it.
        pinned = bool(capture.classification) or (op == "update" and bool(capture.update_columns))
        statements.append(sql.SQL(
            "CREATE OR REPLACE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER "
            "{pin}AS {quoted}"
        ).format(function=function, quoted=_dollar_quoted(body),
                 pin=sql.SQL("SET search_path = pg_catalog, pg_temp " if pinned else "")))
        # OR REPLACE: needs only the TRIGGER privilege (DROP TRIGGER would need table ownership).
        if op == "update" and not capture.update_columns and not capture.classification:
            referencing = "REFERENCING NEW TABLE AS new_rows"
        statements.append(sql.SQL(
            "CREATE OR REPLACE TRIGGER {trigger} AFTER {event} ON {table} " + referencing +
            " FOR EACH STATEMENT EXECUTE FUNCTION {function}()"
        ).format(trigger=trigger, event=sql.SQL(op.upper()), table=table, function=function))
    return statements


def captures_install(conn, *, schema: str, captures: list[Capture]) -> None:
    """Install the schema, the event log and every capture in ONE transaction: all or nothing."""
    with conn.transaction():
        # Even CREATE SCHEMA IF NOT EXISTS needs CREATE on the database, which a user whose schema the
        # DBA created (the minimal set-up printed by connection_grants) does not have.
        if not conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", [schema]).fetchone():
            conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        conn.execute(sql.SQL(EVENT_LOG_DDL).format(schema=sql.Identifier(schema)))
        # Logs installed before the identity cache was introduced get it too (idempotent).
        conn.execute(sql.SQL("ALTER TABLE {} ALTER COLUMN id SET CACHE 100").format(
            sql.Identifier(schema, "event_log")))
        for capture in captures:
            for statement in capture_ddl(capture, schema):
                conn.execute(statement)


def captures_installed(conn, *, schema: str) -> dict[str, list[str]]:
    """Rowbell's live (not retired) triggers: {capture name: [table.trigger, ...]}."""
    out: dict[str, list[str]] = {}
    for trigger, table_schema, table, function, _ in _rowbell_triggers(conn, schema):
        if function != NOOP_FUNCTION:
            out.setdefault(trigger.rsplit("_", 1)[0], []).append(f"{table_schema}.{table}.{trigger}")
    return out


NOOP_FUNCTION = "rb_retired"


def captures_prune(conn, *, schema: str, keep: list[Capture]) -> list[str]:
    """Retire Rowbell triggers no current capture uses; return them as table.trigger.

    Dropping a trigger needs ownership of its table, which Rowbell's user does not have; so an unused
    trigger is replaced (CREATE OR REPLACE needs only TRIGGER) by an inert one, `WHEN (false)` without
    transition tables, that costs next to nothing. `retired_drop_statements` gives the DROP statements a
    table owner may run to remove them for good.
    """
    wanted = {c.name for c in keep}
    retired = []
    with conn.transaction():
        noop = sql.Identifier(schema, NOOP_FUNCTION)
        conn.execute(sql.SQL("CREATE OR REPLACE FUNCTION {}() RETURNS trigger LANGUAGE plpgsql "
                             "SET search_path = pg_catalog AS $$ BEGIN RETURN NULL; END $$").format(noop))
        for trigger, table_schema, table, function, event in _rowbell_triggers(conn, schema):
            if trigger.rsplit("_", 1)[0] in wanted or function == NOOP_FUNCTION:
                continue
            conn.execute(sql.SQL("CREATE OR REPLACE TRIGGER {} AFTER {} ON {} FOR EACH STATEMENT WHEN (false) "
                                 "EXECUTE FUNCTION {}()").format(
                sql.Identifier(trigger), sql.SQL(event), sql.Identifier(table_schema, table), noop))
            conn.execute(sql.SQL("DROP FUNCTION IF EXISTS {}()").format(sql.Identifier(schema, function)))
            retired.append(f"{table_schema}.{table}.{trigger}")
    return retired


def retired_drop_statements(conn, *, schema: str) -> list[str]:
    """DROP TRIGGER statements for retired triggers, for a table owner to run."""
    return [sql.SQL("DROP TRIGGER {} ON {};").format(sql.Identifier(t), sql.Identifier(s, r)).as_string(conn)
            for t, s, r, function, _ in _rowbell_triggers(conn, schema) if function == NOOP_FUNCTION]


def _rowbell_triggers(conn, schema: str):
    """(trigger, table schema, table, function, event) of every Rowbell trigger using `schema`'s functions."""
    return conn.execute(
        """
        SELECT t.tgname, n.nspname, c.relname, p.proname,
               CASE WHEN t.tgtype & 4 <> 0 THEN 'INSERT' WHEN t.tgtype & 8 <> 0 THEN 'DELETE' ELSE 'UPDATE' END
        FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace
        JOIN pg_proc p ON p.oid = t.tgfoid JOIN pg_namespace pn ON pn.oid = p.pronamespace
        WHERE NOT t.tgisinternal AND t.tgname LIKE 'rb\\_%%' AND pn.nspname = %s
        """,
        [schema],
    ).fetchall()
