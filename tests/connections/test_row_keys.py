"""Row keys of every common type, from the customer's INSERT to the webhook body the receiver gets and back
to the row a run reads by key: the same JSON type, every digit, the same instant; and the read by key
uses the primary-key index."""

import json
from datetime import datetime
from decimal import Decimal

import psycopg
import pytest
from django.core import mail
from psycopg import sql
from standardwebhooks.webhooks import Webhook

from apps.audit.models import AuditEvent
from apps.connections.customer import customer_connect
from apps.connections.models import Event
from apps.connections.rows import rows_query, rows_read
from apps.core import exactjson
from apps.deliveries.models import Delivery, DeliveryStatus
from apps.deliveries.services import deliveries_send
from apps.runs.models import Run, RunStatus
from apps.runs.services import runs_execute

from .conftest import CAPTURE_ROLE, CUSTOMER_DB, WRITER_ROLE, admin_connect, poll, writer_connect

pytestmark = pytest.mark.django_db(transaction=True)

# The customer's application writes in its own time zone; Rowbell reads in UTC.
WRITER_TIME_ZONE = "Asia/Kolkata"

# kind: (key columns, their types, the key values as SQL, the id as the event log's JSON spells it)
KEYS = {
    "bigint": (["id"], ["bigint"], ["9007199254740993"], 9007199254740993),  # 2^53 + 1: not a float
    "text": (["id"], ["text"], ["'Ünïcode / key 1.0'"], "Ünïcode / key 1.0"),
    "uuid": (["id"], ["uuid"], ["'8f14e45f-ceea-467f-a0b6-2b0c2c3a4d5e'"], "8f14e45f-ceea-467f-a0b6-2b0c2c3a4d5e"),
    "numeric": (["id"], ["numeric(30,20)"], ["1.23456789012345678901"], Decimal("1.23456789012345678901")),
    "timestamptz": (["id"], ["timestamptz"], ["'2026-03-01 12:34:56.789012+00'"], "2026-03-01T18:04:56.789012+05:30"),
    "timestamp": (["id"], ["timestamp"], ["'2026-03-01 12:34:56.5'"], "2026-03-01T12:34:56.5"),
    "date": (["id"], ["date"], ["'2026-03-01'"], "2026-03-01"),
    "composite": (
        ["name", "at"],
        ["text", "timestamptz"],
        ["'north'", "'2026-03-01 12:00:00+00'"],
        ["north", "2026-03-01T17:30:00+05:30"],
    ),
}


def _same_instant(a: str, b: str) -> bool:
    return datetime.fromisoformat(a) == datetime.fromisoformat(b)


def _assert_key_equal(kind, got, expected):
    """The same JSON type and digits; a timestamptz the same instant, however its zone spells it."""
    if kind == "timestamptz":
        assert isinstance(got, str) and _same_instant(got, expected), (got, expected)
    elif kind == "composite":
        assert got[0] == expected[0] and _same_instant(got[1], expected[1]), (got, expected)
    else:
        assert type(got) is type(expected) and str(got) == str(expected), (got, expected)


def _exact(body: bytes):
    return json.loads(body, parse_float=Decimal)


@pytest.fixture
def keyed(connection):
    """A table `public.keyed_<kind>` per kind, with a `note` column; Rowbell's user reads in UTC."""
    with admin_connect(CUSTOMER_DB) as admin:
        admin.execute(f"ALTER ROLE {CAPTURE_ROLE} IN DATABASE {CUSTOMER_DB} SET TimeZone = 'UTC'")
        for kind, (columns, types, _, _) in KEYS.items():
            admin.execute(f"DROP TABLE IF EXISTS public.keyed_{kind}")
            admin.execute(
                f"CREATE TABLE public.keyed_{kind} ("
                + "".join(f"{c} {t} NOT NULL, " for c, t in zip(columns, types))
                + f"note text, PRIMARY KEY ({', '.join(columns)}))"
            )
            admin.execute(f"GRANT SELECT, TRIGGER ON public.keyed_{kind} TO {CAPTURE_ROLE}")
            admin.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON public.keyed_{kind} TO {WRITER_ROLE}")
    yield
    with admin_connect(CUSTOMER_DB) as admin:
        for kind in KEYS:
            admin.execute(f"DROP TABLE IF EXISTS public.keyed_{kind} CASCADE")
        admin.execute(f"ALTER ROLE {CAPTURE_ROLE} IN DATABASE {CUSTOMER_DB} RESET TimeZone")


def _insert(kind, note="found"):
    columns, _, values, _ = KEYS[kind]
    with writer_connect() as app:
        app.execute(f"SET TimeZone = '{WRITER_TIME_ZONE}'")
        app.execute(
            f"INSERT INTO public.keyed_{kind} ({', '.join(columns)}, note) VALUES ({', '.join(values)}, '{note}')"
        )


@pytest.mark.parametrize("kind", KEYS)
def test_a_row_event_webhook_carries_the_key_as_the_customer_wrote_it(
    product_client, receiver, connection, keyed, kind
):
    response = product_client.post(
        "/api/v1/webhooks",
        {
            "url": receiver.url(),
            "source": {"connection": str(connection.id), "table": f"public.keyed_{kind}", "events": ["row.created"]},
        },
        format="json",
    )
    assert response.status_code == 201, response.json()
    _insert(kind)
    poll(connection_id=connection.id)
    expected = KEYS[kind][3]
    _assert_key_equal(kind, Event.objects.get().ids[0], expected)  # as recorded, read back
    deliveries_send(delivery_ids=list(Delivery.objects.values_list("id", flat=True)))

    assert receiver.wait_for(1)
    hit = receiver.requests[0]
    Webhook(response.json()["secret"]).verify(hit["body"], hit["headers"])
    [sent] = _exact(hit["body"])["ids"]
    _assert_key_equal(kind, sent, expected)
    if kind in ("numeric", "timestamptz", "composite"):  # not merely the same value: the writer's own text
        assert sent == expected


@pytest.mark.parametrize("kind", KEYS)
def test_a_run_finds_the_row_by_its_key_and_its_webhook_carries_the_key(
    product_client, receiver, connection, keyed, kind
):
    endpoint = product_client.post("/api/v1/webhooks", {"url": receiver.url()}, format="json").json()
    response = product_client.post(
        "/api/v1/workflows",
        {
            "key": "keyed",
            "trigger": {
                "type": "database",
                "connection": str(connection.id),
                "table": f"public.keyed_{kind}",
                "events": ["row.created"],
            },
            "steps": [
                {
                    "id": "mail",
                    "type": "notify",
                    "channel": "email",
                    "to": "ops@example.com",
                    "subject": "{{ row.note }}",
                    "body": "{{ row | tojson }}",
                },
                {"id": "hook", "type": "notify", "channel": "webhook", "webhook": endpoint["id"]},
            ],
        },
        format="json",
    )
    assert response.status_code == 201, response.json()
    assert product_client.post("/api/v1/workflows/keyed/publish").status_code == 201
    _insert(kind)
    poll(connection_id=connection.id)
    for _ in range(3):  # the email step, then the webhook step once the email is sent
        runs_execute(run_ids=list(Run.objects.filter(status=RunStatus.QUEUED).values_list("id", flat=True)))
        deliveries_send(
            delivery_ids=list(Delivery.objects.filter(status=DeliveryStatus.QUEUED).values_list("id", flat=True))
        )

    run = Run.objects.get()
    assert run.status == RunStatus.COMPLETED, run.error
    assert run.state["missing_ids"] == [] and len(run.state["rows"]) == 1
    assert [m.subject for m in mail.outbox] == ["found"]  # `row` was found in the template's context
    row = _exact(mail.outbox[0].body)
    columns, expected = KEYS[kind][0], KEYS[kind][3]
    _assert_key_equal(kind, [row[c] for c in columns] if len(columns) > 1 else row["id"], expected)

    assert receiver.wait_for(1)
    hit = receiver.requests[0]
    Webhook(endpoint["secret"]).verify(hit["body"], hit["headers"])
    [sent] = _exact(hit["body"])["data"]["event"]["ids"]
    _assert_key_equal(kind, sent, expected)
    listed = _exact(product_client.get(f"/api/v1/runs/{run.id}").content)  # and the API shows it so
    _assert_key_equal(kind, listed["event"]["ids"][0], expected)


@pytest.mark.parametrize("kind", KEYS)
def test_rows_saved_without_key_types_are_read_with_the_catalog_s_types(connection, keyed, kind):
    _insert(kind, note="here")
    columns, types, _, expected = KEYS[kind]
    absent = {
        "bigint": 1,
        "text": "nope",
        "uuid": "00000000-0000-0000-0000-000000000000",
        "numeric": Decimal("1.5"),
        "timestamptz": "2026-03-01T12:34:56+00:00",
        "timestamp": "2026-03-01T12:34:56",
        "date": "2026-03-02",
        "composite": ["north", "2026-03-01T12:00:01+00:00"],
    }[kind]
    ids = [absent, expected]
    legacy = {"table": f"public.keyed_{kind}", "key": columns}
    base = {c: t.split("(")[0] for c, t in zip(columns, types)}  # as sources record them: no type modifier
    for rows_from in (
        legacy,
        {**legacy, "key_types": {"id": "bigint"} if len(columns) > 1 else {}},
        {**legacy, "key_types": base},
    ):
        rows, missing = rows_read(connection=connection, rows_from=rows_from, ids=ids)
        assert [r["note"] for r in rows] == ["here"] and missing == [absent], rows_from


def test_ids_of_another_shape_than_the_key_name_no_row(connection, keyed):
    _insert("composite")
    rows_from = {
        "table": "public.keyed_composite",
        "key": ["name", "at"],
        "key_types": {"name": "text", "at": "timestamp with time zone"},
    }
    good = KEYS["composite"][3]
    rows, missing = rows_read(connection=connection, rows_from=rows_from, ids=["north", ["north"], good])
    assert [r["note"] for r in rows] == ["found"] and missing == ["north", ["north"]]


def test_a_key_column_gone_from_the_table_is_a_database_error_naming_it(connection, keyed):
    with pytest.raises(psycopg.errors.UndefinedColumn, match="gone"):
        rows_read(connection=connection, rows_from={"table": "public.keyed_bigint", "key": ["gone"]}, ids=[1])


@pytest.mark.parametrize(
    "kind, rows_from, ids",
    [
        ("bigint", {"table": "public.big", "key": ["id"], "key_types": {"id": "bigint"}}, [5, 77_777, 100_001]),
        (
            "composite",
            {
                "table": "public.big_composite",
                "key": ["name", "at"],
                "key_types": {"name": "text", "at": "timestamp with time zone"},
            },
            [["n5", "2026-01-01T00:00:05+00:00"], ["n77777", "2026-01-01T21:36:17+00:00"]],
        ),
    ],
)
def test_a_read_by_key_uses_the_primary_key_index(connection, kind, rows_from, ids):
    table = rows_from["table"].split(".")[1]
    with admin_connect(CUSTOMER_DB) as admin:
        admin.execute(f"DROP TABLE IF EXISTS public.{table}")
        if kind == "bigint":
            admin.execute(f"CREATE TABLE public.{table} (id bigint PRIMARY KEY, note text)")
            admin.execute(f"INSERT INTO public.{table} SELECT n, 'row ' || n FROM generate_series(1, 100000) n")
        else:
            admin.execute(f"CREATE TABLE public.{table} (name text, at timestamptz, note text, PRIMARY KEY (name, at))")
            admin.execute(
                f"INSERT INTO public.{table} SELECT 'n' || n, '2026-01-01 00:00+00'::timestamptz "
                "+ make_interval(secs => n), 'row ' || n FROM generate_series(1, 100000) n"
            )
        admin.execute(f"ANALYZE public.{table}")
        admin.execute(f"GRANT SELECT ON public.{table} TO {CAPTURE_ROLE}")
    try:
        query, params = rows_query(rows_from=rows_from, key_types=rows_from["key_types"], ids=ids)
        with customer_connect(connection) as conn:
            plan = "\n".join(r[0] for r in conn.execute(sql.SQL("EXPLAIN {}").format(query), params))
        assert f"{table}_pkey" in plan and any(
            s in plan for s in ("Index Scan", "Index Only Scan", "Bitmap Index Scan")
        ), plan
        assert "Seq Scan" not in plan, plan
        rows, missing = rows_read(connection=connection, rows_from=rows_from, ids=ids)
        assert [r["note"] for r in rows] == ["row 5", "row 77777"]
        assert missing == ids[2:]
    finally:
        with admin_connect(CUSTOMER_DB) as admin:
            admin.execute(f"DROP TABLE IF EXISTS public.{table}")


def test_a_row_read_the_database_refuses_names_the_grant_that_fixes_it(connection):
    with admin_connect(CUSTOMER_DB) as admin:
        admin.execute(f"REVOKE SELECT ON public.orders FROM {CAPTURE_ROLE}")
    try:
        with pytest.raises(
            psycopg.errors.InsufficientPrivilege, match=f'GRANT SELECT ON TABLE "public"."orders" TO "{CAPTURE_ROLE}";'
        ):
            rows_read(
                connection=connection,
                rows_from={"table": "public.orders", "key": ["id"], "key_types": {"id": "bigint"}},
                ids=[1],
            )
    finally:
        with admin_connect(CUSTOMER_DB) as admin:
            admin.execute(f"GRANT SELECT ON public.orders TO {CAPTURE_ROLE}")


def test_timestamps_are_read_in_utc_whatever_the_database_s_time_zone(connection):
    from apps.connections.customer import customer_sessions_close
    from apps.connections.models import Connection
    from apps.connections.rows import rows_read

    from .conftest import CAPTURE_ROLE, CUSTOMER_DB, admin_connect

    with admin_connect(CUSTOMER_DB) as admin:
        admin.execute("CREATE TABLE public.tz_keys (at timestamptz PRIMARY KEY)")
        admin.execute("INSERT INTO public.tz_keys VALUES ('2026-01-01 12:00:00+00')")
        admin.execute(f"GRANT SELECT ON public.tz_keys TO {CAPTURE_ROLE}")
        admin.execute(f"ALTER DATABASE {CUSTOMER_DB} SET timezone = 'America/New_York'")
    customer_sessions_close()
    try:
        rows, missing = rows_read(
            connection=Connection.objects.get(id=connection.id),
            rows_from={"table": "public.tz_keys", "key": ["at"], "key_types": {"at": "timestamp with time zone"}},
            ids=["2026-01-01T07:00:00-05:00"],
        )
        assert rows == [{"at": "2026-01-01T12:00:00+00:00"}] and missing == []
    finally:
        customer_sessions_close()
        with admin_connect(CUSTOMER_DB) as admin:
            admin.execute(f"ALTER DATABASE {CUSTOMER_DB} RESET timezone")
            admin.execute("DROP TABLE public.tz_keys")


@pytest.mark.parametrize("kind", KEYS)
def test_a_key_sent_to_the_api_names_its_row_with_every_digit(product_client, connection, keyed, kind):
    """A key the API receives (a preview's row_key, a backfill's after) is read as exactly as the event log
    carries it: 1.23456789012345678901 is not the float 1.2345678901234567, another row."""
    response = product_client.post(
        "/api/v1/workflows",
        {
            "key": "keyed",
            "trigger": {
                "type": "database",
                "connection": str(connection.id),
                "table": f"public.keyed_{kind}",
                "events": ["row.created"],
            },
            "steps": [
                {
                    "id": "mail",
                    "type": "notify",
                    "channel": "email",
                    "to": "ops@example.com",
                    "subject": "{{ row.note }}",
                    "body": ".",
                }
            ],
        },
        format="json",
    )
    assert response.status_code == 201, response.json()
    assert product_client.post("/api/v1/workflows/keyed/publish").status_code == 201
    _insert(kind, note="this row")
    key = KEYS[kind][3]

    def post(path, body):
        return product_client.post(path, exactjson.dumps(body), content_type="application/json")

    preview = post("/api/v1/workflows/keyed/preview", {"row_key": key})
    assert preview.status_code == 200, preview.json()
    assert preview.json()["steps"][0]["payload"]["subject"] == "this row"
    page = post("/api/v1/workflows/keyed/backfill", {"dry_run": True})
    assert page.status_code == 200, page.json()
    [example] = page.json()["examples"]
    _assert_key_equal(kind, _exact(page.content)["examples"][0]["row_key"], key)
    after = post("/api/v1/workflows/keyed/backfill", {"dry_run": True, "after": key})
    assert after.status_code == 200, after.json()
    assert (after.json()["rows"], after.json()["examples"]) == (0, [])  # the page starts after the row itself
    started = post("/api/v1/workflows/keyed/backfill", {"after": key})
    assert started.status_code == 202, started.json()
    assert started.json()["started"] == 0
    audited = AuditEvent.objects.get(action="workflow.backfilled").data["after"]  # recorded with every digit
    _assert_key_equal(kind, audited, key)


def test_a_composite_row_key_of_another_length_is_a_400_naming_it(product_client, connection, keyed):
    response = product_client.post(
        "/api/v1/workflows",
        {
            "key": "keyed",
            "trigger": {
                "type": "database",
                "connection": str(connection.id),
                "table": "public.keyed_composite",
                "events": ["row.created"],
            },
            "steps": [
                {"id": "m", "type": "notify", "channel": "email", "to": "a@example.com", "subject": "s", "body": "b"}
            ],
        },
        format="json",
    )
    assert response.status_code == 201, response.json()
    for row_key in (["north"], "north", ["north", "2026-03-01T12:00:00+00:00", 3]):
        answer = product_client.post("/api/v1/workflows/keyed/preview", {"row_key": row_key}, format="json")
        assert answer.status_code == 400, answer.json()
        [field] = answer.json()["error"]["fields"]
        assert field["field"] == "row_key" and "a list of 2 values, one per key column (name, at)" in field["reason"]
