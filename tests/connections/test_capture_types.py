"""Capture on every common PostgreSQL type family: a column filter and every predicate operator either
compile to a comparison that exists (and the customer's writes go on, with the right events), or are refused
when the source is saved, with the column, its type and the reason."""

import pytest
from rest_framework.exceptions import ValidationError

from apps.connections.models import Event
from apps.connections.services import connection_captures_install
from apps.connections.sources import row_source_validate

from .conftest import CAPTURE_ROLE, CUSTOMER_DB, WRITER_ROLE, admin_connect, poll, writer_connect

pytestmark = pytest.mark.django_db(transaction=True)

# column: (declared type, first value, second value, JSON value of the first, JSON value of the second)
# with first < second in the type's own order.
COLUMNS = {
    "i": ("integer", "1", "2", 1, 2),
    "num": ("numeric(12,2)", "1.50", "2.50", 1.5, 2.5),
    "t": ("text", "a", "b", "a", "b"),
    "b": ("boolean", "false", "true", False, True),
    "ts": ("timestamp", "2026-01-01 00:00", "2026-06-01 00:00", "2026-01-01 00:00", "2026-06-01 00:00"),
    "tstz": (
        "timestamptz",
        "2026-01-01 00:00+00",
        "2026-06-01 00:00+00",
        "2026-01-01T00:00:00+00:00",
        "2026-06-01T00:00:00+00:00",
    ),
    "d": ("date", "2026-01-01", "2026-02-01", "2026-01-01", "2026-02-01"),
    "u": (
        "uuid",
        "00000000-0000-0000-0000-000000000001",
        "00000000-0000-0000-0000-000000000002",
        "00000000-0000-0000-0000-000000000001",
        "00000000-0000-0000-0000-000000000002",
    ),
    "j": ("json", '{"a": 1}', '{"a": 2}', {"a": 1}, {"a": 2}),
    "jb": ("jsonb", '{"a": 1}', '{"a": 2}', {"a": 1}, {"a": 2}),
    "arr": ("text[]", "{a}", "{b}", "{a}", "{b}"),
    "mood": ("mood", "sad", "happy", "sad", "happy"),
    "pt": ("point", "(1,1)", "(2,2)", "(1,1)", "(2,2)"),
    "pts": ("point[]", '{"(1,1)"}', '{"(2,2)"}', '{"(1,1)"}', '{"(2,2)"}'),
    "ip": ("inet", "10.0.0.1", "10.0.0.2", "10.0.0.1", "10.0.0.2"),
    "rng": ("int4range", "[1,2)", "[1,3)", "[1,2)", "[1,3)"),
    "code": ("lower_code", "aa", "bb", "aa", "bb"),
}
# Types PostgreSQL gives no equality (json, point; point[] has one that fails at run time) or no ordering.
NO_EQUALITY = {"j", "pt", "pts"}
OPS = ["eq", "ne", "lt", "lte", "gt", "gte", "in", "is_null", "is_not_null"]
# Which statement makes a row enter and leave, for a row inserted with the first value, updated to the
# second, then deleted; predicates compare with the first value (lt and gte with the second).
EXPECTED = {
    "eq": {"insert": "entered", "update": "left"},
    "in": {"insert": "entered", "update": "left"},
    "lt": {"insert": "entered", "update": "left"},
    "lte": {"insert": "entered", "update": "left"},
    "ne": {"update": "entered", "delete": "left"},
    "gt": {"update": "entered", "delete": "left"},
    "gte": {"update": "entered", "delete": "left"},
    "is_not_null": {"insert": "entered", "delete": "left"},
    "is_null": {},
}


@pytest.fixture
def typed_table(connection):
    with admin_connect(CUSTOMER_DB) as admin:
        admin.execute("DROP TABLE IF EXISTS public.typed; DROP TYPE IF EXISTS mood; DROP DOMAIN IF EXISTS lower_code")
        admin.execute("CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy')")
        # A domain whose CHECK a literal compared with it must never be put through.
        admin.execute("CREATE DOMAIN lower_code AS text CHECK (VALUE ~ '^[a-z]+$')")
        columns = ", ".join(f"{name} {spec[0]}" for name, spec in COLUMNS.items())
        admin.execute(f"CREATE TABLE public.typed (id bigserial PRIMARY KEY, note text, {columns})")
        admin.execute(f"GRANT SELECT, TRIGGER ON public.typed TO {CAPTURE_ROLE}")
        admin.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON public.typed TO {WRITER_ROLE}")
        admin.execute(f"GRANT USAGE ON SEQUENCE public.typed_id_seq TO {WRITER_ROLE}")
    yield "public.typed"
    with admin_connect(CUSTOMER_DB) as admin:
        admin.execute("DROP TABLE IF EXISTS public.typed CASCADE; DROP TYPE mood; DROP DOMAIN lower_code")


def _validate(connection, source):
    return row_source_validate(connection=connection, source={"connection": str(connection.id), **source})


def _predicate(name, op):
    _, _, _, first, second = COLUMNS[name]
    if op in ("is_null", "is_not_null"):
        return {"column": name, "op": op}
    value = second if op in ("lt", "gte") else first
    return {"column": name, "op": op, "value": [value] if op == "in" else value}


def test_every_type_family_through_a_column_filter_and_every_predicate_operator(connection, typed_table):
    filters, predicates, refused = {}, {}, {}
    for name in COLUMNS:
        filters[name] = _validate(connection, {"table": typed_table, "events": ["row.updated"], "columns": [name]})[1]
        for op in OPS:
            try:
                predicates[(name, op)] = _validate(
                    connection,
                    {
                        "table": typed_table,
                        "classification": {"name": f"{name}_{op}", "predicate": _predicate(name, op), "on": "both"},
                    },
                )[1]
            except ValidationError as exc:
                refused[(name, op)] = exc.detail
    # Refused at save, with the column, its type and the reason, exactly where PostgreSQL has no operator.
    assert set(refused) == {(n, op) for n in NO_EQUALITY for op in OPS if op not in ("is_null", "is_not_null")}
    reason = str(refused[("j", "eq")]["source.classification.predicate.op"][0])
    assert "j is of type json" in reason and "no equality operator" in reason and "jsonb" in reason
    assert "pt is of type point" in str(refused[("pt", "lt")]["source.classification.predicate.op"][0])

    connection_captures_install(
        connection=connection, actor="test", captures=list(filters.values()) + list(predicates.values())
    )
    first = ", ".join(f"'{spec[1]}'" for spec in COLUMNS.values())
    second = ", ".join(f"{name} = '{spec[2]}'" for name, spec in COLUMNS.items())
    statements = {}
    with writer_connect() as app:  # the customer's writes all succeed
        statements["insert"] = app.execute(
            f"INSERT INTO public.typed (note, {', '.join(COLUMNS)}) "
            f"VALUES ('x', {first}) RETURNING pg_current_xact_id()"
        ).fetchone()[0]
        statements["update"] = app.execute(
            f"UPDATE public.typed SET {second} RETURNING pg_current_xact_id()"
        ).fetchone()[0]
        statements["other"] = app.execute(
            "UPDATE public.typed SET note = 'y' RETURNING pg_current_xact_id()"
        ).fetchone()[0]
        statements["same"] = app.execute(f"UPDATE public.typed SET {second} RETURNING pg_current_xact_id()").fetchone()[
            0
        ]
        statements["delete"] = app.execute("DELETE FROM public.typed RETURNING pg_current_xact_id()").fetchone()[0]
    by_xid = {int(str(xid)): statement for statement, xid in statements.items()}
    while poll(connection_id=connection.id):
        pass
    events: dict[str, dict] = {}
    for e in Event.objects.filter(connection=connection):
        events.setdefault(e.capture, {})[by_xid[int(e.xid)]] = e.op
    assert not [e for e in Event.objects.filter(connection=connection, op="error")]
    for name, capture in filters.items():  # only the update that changed the column counts, whatever its type
        assert events.get(capture.name) == {"update": "update"}, name
    for (name, op), capture in predicates.items():
        assert events.get(capture.name, {}) == EXPECTED[op], (name, op)


def test_a_value_the_column_rejects_is_refused_at_save_naming_field_column_and_type(
    product_client, connection, typed_table
):
    response = product_client.post(
        "/api/v1/webhooks",
        {
            "url": "http://127.0.0.1:9/x",
            "source": {
                "connection": str(connection.id),
                "table": typed_table,
                "classification": {
                    "name": "vip",
                    "on": "entered",
                    "predicate": {"column": "u", "op": "eq", "value": "vip"},
                },
            },
        },
        format="json",
    )
    assert response.status_code == 400, response.json()
    [field] = response.json()["error"]["fields"]
    assert field["field"] == "source.classification.predicate.value"
    assert "column u of type uuid" in field["reason"] and "vip" in field["reason"]
    # A domain's CHECK applies to its values too: refused, not installed to fail every write.
    response = product_client.post(
        "/api/v1/webhooks",
        {
            "url": "http://127.0.0.1:9/x",
            "source": {
                "connection": str(connection.id),
                "table": typed_table,
                "classification": {"name": "c", "predicate": {"column": "mood", "op": "in", "value": ["sad", "angry"]}},
            },
        },
        format="json",
    )
    assert response.status_code == 400
    [field] = response.json()["error"]["fields"]
    assert field["field"] == "source.classification.predicate.value[1]" and "mood" in field["reason"]
    # 'now' would be read once, when saved: refused rather than frozen.
    response = product_client.post(
        "/api/v1/webhooks",
        {
            "url": "http://127.0.0.1:9/x",
            "source": {
                "connection": str(connection.id),
                "table": typed_table,
                "classification": {"name": "c", "predicate": {"column": "tstz", "op": "gt", "value": "now"}},
            },
        },
        format="json",
    )
    assert (
        response.status_code == 400
        and "fixed at the moment the source is saved" in response.json()["error"]["fields"][0]["reason"]
    )


def test_a_json_column_filter_is_accepted_and_updates_of_other_columns_still_succeed(
    product_client, connection, typed_table
):
    response = product_client.post(
        "/api/v1/webhooks",
        {
            "url": "http://127.0.0.1:9/x",
            "source": {
                "connection": str(connection.id),
                "table": typed_table,
                "events": ["row.updated"],
                "columns": ["j", "pt"],
            },
        },
        format="json",
    )
    assert response.status_code == 201, response.json()
    with writer_connect() as app:
        app.execute("INSERT INTO public.typed (note, j, pt) VALUES ('x', '{\"a\": 1}', '(1,1)')")
        app.execute("UPDATE public.typed SET note = 'y'")  # failed with `operator does not exist: json = json`
        app.execute("UPDATE public.typed SET j = '{\"a\":  1}'")  # json keeps its text: a change
        app.execute("UPDATE public.typed SET pt = '(1,1)'")  # the same point: no change
    while poll(connection_id=connection.id):
        pass
    assert [e.op for e in Event.objects.filter(connection=connection).order_by("xid")] == ["update"]


@pytest.fixture
def extension_table(connection):
    with admin_connect(CUSTOMER_DB) as admin:
        admin.execute("CREATE EXTENSION IF NOT EXISTS citext; CREATE EXTENSION IF NOT EXISTS hstore")
        admin.execute("DROP TABLE IF EXISTS public.contacts")
        admin.execute(
            "CREATE TABLE public.contacts (email citext PRIMARY KEY, attrs hstore, seen timestamptz, due date)"
        )
        admin.execute(f"GRANT SELECT, TRIGGER ON public.contacts TO {CAPTURE_ROLE}")
        admin.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON public.contacts TO {WRITER_ROLE}")
    yield "public.contacts"
    with admin_connect(CUSTOMER_DB) as admin:
        admin.execute("DROP TABLE IF EXISTS public.contacts")


def test_extension_types_compare_with_their_own_operators(connection, extension_table):
    boss = _validate(
        connection,
        {
            "table": extension_table,
            "classification": {
                "name": "boss",
                "predicate": {"column": "email", "op": "eq", "value": "Boss@X.com"},
                "on": "entered",
            },
        },
    )[1]
    attrs = _validate(connection, {"table": extension_table, "events": ["row.updated"], "columns": ["attrs"]})[1]
    connection_captures_install(connection=connection, captures=[boss, attrs], actor="test")
    with writer_connect() as app:
        app.execute("INSERT INTO public.contacts (email, attrs) VALUES ('boss@x.com', 'a=>1')")  # citext: equal
        app.execute("UPDATE public.contacts SET attrs = 'a=>2'")  # hstore's `=`, in its own schema
        app.execute("UPDATE public.contacts SET attrs = 'a=>2'")  # the same: nothing
    while poll(connection_id=connection.id):
        pass
    events = {(e.capture, e.op) for e in Event.objects.filter(connection=connection)}
    assert events == {(boss.name, "entered"), (attrs.name, "update")}


def test_a_predicate_means_the_same_whatever_the_writers_session_settings(connection, extension_table):
    since = _validate(
        connection,
        {
            "table": extension_table,
            "classification": {
                "name": "recent",
                "on": "entered",
                "predicate": {
                    "and": [
                        {"column": "seen", "op": "gte", "value": "2024-01-01 00:00"},  # read as UTC when saved
                        {"column": "due", "op": "eq", "value": "01/02/2024"},
                    ]
                },
            },
        },
    )[1]  # read as January 2nd when saved
    connection_captures_install(connection=connection, captures=[since], actor="test")
    for zone, style, email in (("UTC", "ISO, MDY", "a@x"), ("Asia/Tokyo", "ISO, DMY", "b@x")):
        with writer_connect() as app:
            app.execute(f"SET TimeZone = '{zone}'; SET DateStyle = '{style}'")
            app.execute(
                "INSERT INTO public.contacts (email, seen, due) VALUES (%s, '2024-01-01 00:30+00', '2024-01-02')",
                [email],
            )
            app.execute(
                "INSERT INTO public.contacts (email, seen, due) "  # before the instant, in any zone
                "VALUES (%s, '2023-12-31 20:00+00', '2024-01-02')",
                ["early-" + email],
            )
    while poll(connection_id=connection.id):
        pass
    assert sorted(e.ids[0] for e in Event.objects.filter(connection=connection)) == ["a@x", "b@x"]
    assert not Event.objects.filter(connection=connection, op="error").exists()
