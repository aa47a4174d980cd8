"""The customer's database is sacred: a migration on a watched table never makes its writes fail (Rowbell
notices the drift and says what it affects), and no committed change is lost: partitions named directly,
TRUNCATE, key-changing UPDATEs."""

from io import StringIO

import psycopg
import pytest
from django.core import mail
from django.core.management import CommandError, call_command

from apps.audit.models import AuditEvent
from apps.connections.models import Event
from apps.connections.services import connection_captures_install, connections_health_refresh
from apps.connections.sources import row_source_validate

from .conftest import CAPTURE_ROLE, CUSTOMER_DB, WRITER_ROLE, admin_connect, poll, writer_connect

pytestmark = pytest.mark.django_db(transaction=True)


def _grant(admin, table):
    admin.execute(f"GRANT SELECT, TRIGGER ON {table} TO {CAPTURE_ROLE}")
    admin.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON {table} TO {WRITER_ROLE}")


@pytest.fixture
def tickets(connection):
    with admin_connect(CUSTOMER_DB) as admin:
        admin.execute("DROP TABLE IF EXISTS public.tickets")
        admin.execute("CREATE TABLE public.tickets (id bigint PRIMARY KEY, state text, title text)")
        _grant(admin, "public.tickets")
    yield "public.tickets"
    with admin_connect(CUSTOMER_DB) as admin:
        admin.execute("DROP TABLE IF EXISTS public.tickets CASCADE")


def _events(connection):
    while poll(connection_id=connection.id):
        pass
    return [(e.op, e.ids) for e in Event.objects.filter(connection=connection).order_by("xid", "source_id")]


def _subscribe(client, connection, table, **source):
    response = client.post(
        "/api/v1/webhooks",
        {"url": "http://127.0.0.1:9/x", "source": {"connection": str(connection.id), "table": table, **source}},
        format="json",
    )
    assert response.status_code == 201, response.json()
    return response.json()


MIGRATIONS = {
    "rename column": (
        "ALTER TABLE public.tickets RENAME COLUMN state TO status",
        "status",
        "The column state of public.tickets no longer exists",
    ),
    "drop column": (
        "ALTER TABLE public.tickets DROP COLUMN state",
        None,
        "The column state of public.tickets no longer exists",
    ),
    "rename key": (
        "ALTER TABLE public.tickets RENAME COLUMN id TO ticket_id",
        "state",
        "The key column id of public.tickets no longer exists",
    ),
    "retype column": (
        "ALTER TABLE public.tickets ALTER COLUMN state TYPE integer USING length(state)",
        "state",
        "Column state of public.tickets changed type from text to integer",
    ),
}


@pytest.mark.parametrize("migration", MIGRATIONS)
def test_a_migration_on_a_watched_table_never_makes_its_writes_fail(product_client, connection, tickets, migration):
    changes = _subscribe(
        product_client, connection, tickets, events=["row.created", "row.updated", "row.deleted"], columns=["state"]
    )
    _subscribe(
        product_client,
        connection,
        tickets,
        classification={"name": "open", "predicate": {"column": "state", "op": "eq", "value": "open"}},
    )
    statement, column, drift = MIGRATIONS[migration]
    with admin_connect(CUSTOMER_DB) as admin:
        admin.execute(statement)
    key = "ticket_id" if migration == "rename key" else "id"
    value = "1" if migration == "retype column" else "'closed'"
    with writer_connect() as app:  # each of these failed with `column n.state does not exist` (or alike)
        app.execute(f"INSERT INTO public.tickets ({key}, title) VALUES (1, 'a'), (2, 'b')")
        app.execute(f"UPDATE public.tickets SET title = 'c' WHERE {key} = 1")
        if column:
            app.execute(f"UPDATE public.tickets SET {column} = {value} WHERE {key} = 2")
        app.execute(f"DELETE FROM public.tickets WHERE {key} = 1")
    events = _events(connection)
    errors = Event.objects.filter(connection=connection, op="error")
    if migration == "retype column":  # compared as the text it was saved as: it still works
        assert ("update", [2]) in events and not errors.exists()
    else:  # logged as errors, with the keys where they can still be read
        assert events and {op for op, _ in events} <= {"error", "insert", "delete"}
        assert errors.exists() and all(e.detail["message"] for e in errors)
        if migration != "rename key":
            assert [1, 2] in [e.ids for e in errors]

    # Noticed, naming what it affects, within a health tick (and live in GET .../health).
    connections_health_refresh()
    health = product_client.get(f"/api/v1/connections/{connection.id}/health").json()
    details = " ".join(p["detail"] for p in health["capture_problems"])
    assert drift in details, details
    assert changes["id"] in {e for p in health["capture_problems"] for e in p["endpoints"]}


def test_drift_is_reported_everywhere_escalated_once_and_a_correction_repairs_it(
    product_client, connection, tickets, settings, operator
):
    settings.ADMINS = [("Ops", "ops@example.com")]
    _subscribe(product_client, connection, tickets, events=["row.updated"], columns=["state"])
    workflow = product_client.post(
        "/api/v1/workflows",
        {
            "key": "ticket-state",
            "trigger": {
                "type": "database",
                "connection": str(connection.id),
                "table": tickets,
                "events": ["row.updated"],
                "columns": ["state"],
            },
            "steps": [{"type": "wait", "duration": "1s"}],
        },
        format="json",
    )
    assert workflow.status_code == 201, workflow.json()
    assert product_client.post("/api/v1/workflows/ticket-state/publish").status_code == 201
    check = product_client.post(f"/api/v1/connections/{connection.id}/check", {}, format="json").json()
    assert check["ok"] is True and "table public.tickets" in {c["name"] for c in check["checks"]}

    with admin_connect(CUSTOMER_DB) as admin:
        admin.execute("ALTER TABLE public.tickets RENAME COLUMN state TO status")
    with writer_connect() as app:
        app.execute("INSERT INTO public.tickets (id) VALUES (1)")
        app.execute("UPDATE public.tickets SET status = 'closed'")
    _events(connection)
    connections_health_refresh()
    connections_health_refresh()  # the same drift again: no second notice

    check = product_client.post(f"/api/v1/connections/{connection.id}/check", {}, format="json").json()
    assert check["ok"] is False
    [capture_check] = [c for c in check["checks"] if c["name"].startswith("capture ") and not c["ok"]]
    assert "column state of public.tickets no longer exists" in capture_check["detail"]
    assert "workflow ticket-state" in capture_check["detail"]
    out = StringIO()
    with pytest.raises(CommandError):
        call_command("triggers", "status", "--connection", str(connection.id), stdout=out)
    assert "BROKEN" in out.getvalue() and "workflow ticket-state" in out.getvalue()
    page = operator.get(f"/admin/connections/connection/{connection.id}/change/").content.decode()
    assert "column state of public.tickets no longer exists" in page and "workflow ticket-state" in page
    assert "broken: 2 problem(s)" in operator.get("/admin/connections/connection/").content.decode()
    home = operator.get("/admin/").content.decode()
    assert "Capture drift" in home[home.index('id="connections-health"') :]
    assert len(mail.outbox) == 1 and "tickets" in mail.outbox[0].body and "ticket-state" in mail.outbox[0].body
    assert AuditEvent.objects.filter(action="connection.capture_drift").count() == 1

    # Corrected: the workflow follows the new column and is published again; the endpoint is replaced.
    from apps.deliveries.models import WebhookEndpoint

    for endpoint in WebhookEndpoint.objects.filter(connection=connection):
        product_client.post(f"/api/v1/webhooks/{endpoint.id}/disable")
    _subscribe(product_client, connection, tickets, events=["row.updated"], columns=["status"])
    assert (
        product_client.put(
            "/api/v1/workflows/ticket-state",
            {
                "trigger": {
                    "type": "database",
                    "connection": str(connection.id),
                    "table": tickets,
                    "events": ["row.updated"],
                    "columns": ["status"],
                },
                "steps": [{"type": "wait", "duration": "1s"}],
            },
            format="json",
        ).status_code
        == 200
    )
    assert product_client.post("/api/v1/workflows/ticket-state/publish").status_code == 201
    call_command("triggers", "prune", "--connection", str(connection.id), stdout=StringIO())
    with writer_connect() as app:
        app.execute("UPDATE public.tickets SET status = 'open'")
    assert ("update", [1]) in _events(connection)
    connections_health_refresh()
    connection.refresh_from_db()
    assert connection.capture_problems == []
    assert AuditEvent.objects.filter(action="connection.capture_drift_resolved").exists()
    assert product_client.post(f"/api/v1/connections/{connection.id}/check", {}, format="json").json()["ok"]


@pytest.fixture
def partitioned(connection):
    with admin_connect(CUSTOMER_DB) as admin:
        admin.execute("DROP TABLE IF EXISTS public.events")
        admin.execute(
            "CREATE TABLE public.events (id bigint, at date, kind text, PRIMARY KEY (id, at)) PARTITION BY RANGE (at)"
        )
        admin.execute(
            "CREATE TABLE public.events_2026 PARTITION OF public.events "
            "FOR VALUES FROM ('2026-01-01') TO ('2027-01-01')"
        )
        for table in ("public.events", "public.events_2026"):
            _grant(admin, table)
    yield "public.events"
    with admin_connect(CUSTOMER_DB) as admin:
        admin.execute("DROP TABLE IF EXISTS public.events CASCADE")


def test_statements_naming_a_partition_are_reported_under_the_parent(product_client, connection, partitioned):
    _subscribe(product_client, connection, partitioned, events=["row.created", "row.updated", "row.deleted"])
    with writer_connect() as app:
        app.execute("INSERT INTO public.events_2026 VALUES (1, '2026-05-01', 'a')")  # gave no event before
        app.execute("UPDATE public.events_2026 SET kind = 'b'")
        app.execute("INSERT INTO public.events VALUES (2, '2026-06-01', 'a')")
        app.execute("DELETE FROM public.events_2026 WHERE id = 2")
    assert _events(connection) == [
        ("insert", [[1, "2026-05-01"]]),
        ("update", [[1, "2026-05-01"]]),
        ("insert", [[2, "2026-06-01"]]),
        ("delete", [[2, "2026-06-01"]]),
    ]
    assert set(Event.objects.values_list("table_name", flat=True)) == {"public.events"}

    # A partition created later gets the triggers at the next health tick (and drift says so until then).
    with admin_connect(CUSTOMER_DB) as admin:
        admin.execute(
            "CREATE TABLE public.events_2027 PARTITION OF public.events "
            "FOR VALUES FROM ('2027-01-01') TO ('2028-01-01')"
        )
        _grant(admin, "public.events_2027")
    health = product_client.get(f"/api/v1/connections/{connection.id}/health").json()
    assert any("events_2027" in p["detail"] and p["repairable"] for p in health["capture_problems"])
    connections_health_refresh()
    with writer_connect() as app:
        app.execute("INSERT INTO public.events_2027 VALUES (3, '2027-05-01', 'a')")
    assert ("insert", [[3, "2027-05-01"]]) in _events(connection)
    assert product_client.get(f"/api/v1/connections/{connection.id}/health").json()["capture_problems"] == []


def test_a_new_partition_without_the_grant_is_reported_with_the_grant_that_fixes_it(
    product_client, connection, partitioned
):
    _subscribe(product_client, connection, partitioned, events=["row.created"])
    with admin_connect(CUSTOMER_DB) as admin:
        admin.execute(
            "CREATE TABLE public.events_2028 PARTITION OF public.events "
            "FOR VALUES FROM ('2028-01-01') TO ('2029-01-01')"
        )
    health = product_client.get(f"/api/v1/connections/{connection.id}/health").json()
    [missing] = [p for p in health["capture_problems"] if p["kind"] == "missing_grant"]
    assert not missing["repairable"] and f'"public"."events_2028" TO "{CAPTURE_ROLE}"' in missing["detail"]
    connections_health_refresh()
    connection.refresh_from_db()
    failed = [p for p in connection.capture_problems if p["kind"] == "install_failed"]
    assert failed and 'GRANT SELECT, TRIGGER ON TABLE "public"."events_2028"' in failed[0]["detail"]
    check = product_client.post(f"/api/v1/connections/{connection.id}/check", {}, format="json").json()
    [table] = [c for c in check["checks"] if c["name"] == "table public.events"]
    assert (
        not table["ok"]
        and f'GRANT SELECT, TRIGGER ON TABLE "public"."events_2028" TO "{CAPTURE_ROLE}"' in table["detail"]
    )


def test_truncate_is_an_event_of_its_own_for_deletes_and_classifications(product_client, connection, partitioned):
    deleted = _subscribe(product_client, connection, "public.orders", events=["row.created", "row.deleted"])
    _subscribe(
        product_client,
        connection,
        "public.orders",
        classification={"name": "paid", "predicate": {"column": "paid", "op": "eq", "value": True}, "on": "left"},
    )
    _subscribe(product_client, connection, partitioned, events=["row.deleted"])
    with admin_connect(CUSTOMER_DB) as admin:
        admin.execute(f"GRANT TRUNCATE ON public.orders, public.order_tags TO {WRITER_ROLE}")
    with writer_connect() as app:
        app.execute("INSERT INTO public.orders (status, paid) VALUES ('new', true)")
        app.execute("TRUNCATE public.orders CASCADE")
        app.execute("INSERT INTO public.events VALUES (1, '2026-05-01', 'a')")
        app.execute("TRUNCATE public.events")  # fires on its partition too: one event
        app.execute("TRUNCATE public.events_2026")
    with writer_connect(autocommit=False) as app:  # emptied, refilled and emptied again in one transaction
        app.execute("TRUNCATE public.orders CASCADE")
        app.execute("INSERT INTO public.orders (status) VALUES ('new')")
        app.execute("TRUNCATE public.orders CASCADE")
        app.commit()
    _events(connection)
    events = Event.objects.filter(connection=connection, op="truncate").order_by("xid", "source_id")
    assert [(e.table_name, e.detail) for e in events] == [
        ("public.orders", None),
        ("public.orders", None),
        ("public.events", None),
        ("public.events", {"partition": "public.events_2026"}),
    ] + [("public.orders", None)] * 3
    from apps.deliveries.models import Delivery

    sent = Delivery.objects.filter(endpoint_id=deleted["id"]).order_by("id").values_list("payload", flat=True)
    assert [(p["type"], p["ids"]) for p in sent] == [
        ("row.created", [1]),
        ("table.truncated", []),
        ("table.truncated", []),
        ("row.created", [2]),
        ("table.truncated", []),
    ]
    partition = [p for p in Delivery.objects.values_list("payload", flat=True) if p.get("partition")]
    assert [p["partition"] for p in partition] == ["public.events_2026"]


def test_a_key_changing_update_is_reported_by_filtered_sources_and_classifications(product_client, connection):
    _subscribe(product_client, connection, "public.orders", events=["row.updated"], columns=["status"])
    _subscribe(
        product_client,
        connection,
        "public.orders",
        classification={"name": "paid", "predicate": {"column": "paid", "op": "eq", "value": True}},
    )
    with writer_connect() as app:
        app.execute("INSERT INTO public.orders (id, status, paid) VALUES (1, 'new', true)")
        app.execute("UPDATE public.orders SET id = 10 WHERE id = 1")  # status and paid unchanged
    by_op = {}
    for op, ids in _events(connection):
        by_op.setdefault(op, []).append(ids)
    assert by_op["update"] == [[10]]  # as an update, under the new key
    assert by_op["entered"] == [[1], [10]] and by_op["left"] == [[1]]  # the old key left, the new one entered


def test_an_install_never_queues_the_customers_writers_behind_a_long_transaction(connection):
    capture = row_source_validate(
        connection=connection,
        source={"connection": str(connection.id), "table": "public.orders", "events": ["row.created"]},
    )[1]
    with writer_connect(autocommit=False) as long_running:
        long_running.execute("INSERT INTO public.orders (status) VALUES ('open')")  # holds its table lock
        from apps.connections.services import CaptureInstallFailed

        with pytest.raises(CaptureInstallFailed, match="locked by a long-running transaction"):
            connection_captures_install(connection=connection, captures=[capture], actor="test")
        long_running.rollback()
    with psycopg.connect(**{k: v for k, v in connection_kwargs(connection).items()}) as conn:
        assert conn.execute("SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'rb\\_%'").fetchone()[0] == 0


def connection_kwargs(connection):
    return {
        "host": connection.host,
        "port": connection.port,
        "dbname": connection.database,
        "user": connection.user,
        "password": connection.password,
    }


def test_mixed_case_names_work_everywhere(product_client, connection):
    with admin_connect(CUSTOMER_DB) as admin:
        admin.execute("CREATE SCHEMA IF NOT EXISTS crm")
        admin.execute('DROP TABLE IF EXISTS crm."CustomerNotes"')
        admin.execute('CREATE TABLE crm."CustomerNotes" ("NoteId" bigint PRIMARY KEY, "Body" text)')
        admin.execute(f"GRANT USAGE ON SCHEMA crm TO {CAPTURE_ROLE}, {WRITER_ROLE}")
        _grant(admin, 'crm."CustomerNotes"')
    try:
        out = StringIO()
        call_command("connection_grants", "--user", "rowbell", "--tables", "crm.CustomerNotes", stdout=out)
        assert 'GRANT SELECT, TRIGGER ON TABLE "crm"."CustomerNotes" TO "rowbell";' in out.getvalue()
        tables = product_client.get(f"/api/v1/connections/{connection.id}/tables").json()
        assert {"schema": "crm", "name": "CustomerNotes"}.items() <= [
            t for t in tables if t["name"] == "CustomerNotes"
        ][0].items()
        check = product_client.post(
            f"/api/v1/connections/{connection.id}/check",
            {"tables": ["crm.CustomerNotes", 'crm."CustomerNotes"']},
            format="json",
        ).json()
        assert check["ok"] is True, check
        _subscribe(
            product_client, connection, "crm.CustomerNotes", events=["row.created", "row.updated"], columns=["Body"]
        )
        with writer_connect() as app:
            app.execute("INSERT INTO crm.\"CustomerNotes\" VALUES (1, 'x')")
            app.execute('UPDATE crm."CustomerNotes" SET "Body" = \'y\'')
        assert _events(connection) == [("insert", [1]), ("update", [1])]
        assert Event.objects.first().table_name == "crm.CustomerNotes"
        # A name that holds a dot is written in double quotes, and read back the same everywhere.
        with admin_connect(CUSTOMER_DB) as admin:
            admin.execute('CREATE TABLE crm."Customer.Notes" (id bigint PRIMARY KEY)')
            _grant(admin, 'crm."Customer.Notes"')
        created = _subscribe(product_client, connection, 'crm."Customer.Notes"', events=["row.created"])
        assert created["source"]["table"] == 'crm."Customer.Notes"'
        check = product_client.post(f"/api/v1/connections/{connection.id}/check", {}, format="json").json()
        assert check["ok"] is True and 'table crm."Customer.Notes"' in {c["name"] for c in check["checks"]}
    finally:
        with admin_connect(CUSTOMER_DB) as admin:
            admin.execute("DROP SCHEMA crm CASCADE")


def test_a_table_without_grants_is_refused_with_the_grant_that_fixes_it(product_client, connection):
    with admin_connect(CUSTOMER_DB) as admin:
        admin.execute("DROP TABLE IF EXISTS public.tags; CREATE TABLE public.tags (id int PRIMARY KEY)")
    try:
        response = product_client.post(
            "/api/v1/webhooks",
            {
                "url": "http://127.0.0.1:9/x",
                "source": {"connection": str(connection.id), "table": "public.tags", "events": ["row.created"]},
            },
            format="json",
        )
        assert response.status_code == 400
        assert (
            f'GRANT SELECT, TRIGGER ON TABLE "public"."tags" TO "{CAPTURE_ROLE}";'
            in response.json()["error"]["fields"][0]["reason"]
        )
        with admin_connect(CUSTOMER_DB) as admin:
            admin.execute(f"GRANT SELECT ON public.tags TO {CAPTURE_ROLE}")
        response = product_client.post(
            "/api/v1/webhooks",
            {
                "url": "http://127.0.0.1:9/x",
                "source": {"connection": str(connection.id), "table": "public.tags", "events": ["row.created"]},
            },
            format="json",
        )
        assert response.status_code == 400  # was `permission denied for table tags` on install
        assert (
            f'GRANT TRIGGER ON TABLE "public"."tags" TO "{CAPTURE_ROLE}";'
            in response.json()["error"]["fields"][0]["reason"]
        )
    finally:
        with admin_connect(CUSTOMER_DB) as admin:
            admin.execute("DROP TABLE public.tags")


def _connect(client, customer_db, name, **extra):
    return client.post("/api/v1/connections", {"name": name, **customer_db, **extra}, format="json")


def test_a_second_connection_to_one_database_and_schema_is_refused_naming_the_first(product_client, customer_db):
    first = _connect(product_client, customer_db, "shop")
    assert first.status_code == 201, first.json()
    second = _connect(product_client, customer_db, "shop-again")
    assert second.status_code == 409
    assert (
        f"Connection 'shop' ({first.json()['id']}) already watches schema rowbell" in second.json()["error"]["message"]
    )
    # Another product is told that the schema is taken, not whose it is.
    from tests import factories
    from tests.conftest import client_for

    other = _connect(client_for(factories.make_product("Other")[1]), customer_db, "theirs")
    assert other.status_code == 409 and "shop" not in other.json()["error"]["message"]
    from apps.connections.customer import customer_sessions_close

    from .conftest import customer_db_reset

    customer_sessions_close()
    customer_db_reset()


def test_a_prune_never_retires_the_triggers_of_another_connections_schema(product_client, connection):
    _subscribe(product_client, connection, "public.orders", events=["row.created"])
    from apps.connections.models import Connection
    from apps.connections.services import connection_captures_prune

    # A connection saved before schemas had owners, to the same database and schema.
    twin = Connection.objects.create(
        product=connection.product,
        name="twin",
        host=connection.host,
        port=connection.port,
        database=connection.database,
        user=connection.user,
        password=connection.password,
    )
    from apps.core.exceptions import Conflict

    with pytest.raises(Conflict, match="already watches schema rowbell"):
        connection_captures_prune(connection=twin, actor="test")
    with writer_connect() as app:
        app.execute("INSERT INTO public.orders (status) VALUES ('paid')")
    assert _events(connection) == [("insert", [1])]


def test_a_connection_is_deleted_only_when_nothing_uses_it_and_its_triggers_are_retired(product_client, connection):
    endpoint = _subscribe(product_client, connection, "public.orders", events=["row.created"])
    response = product_client.delete(f"/api/v1/connections/{connection.id}")
    assert response.status_code == 409 and endpoint["id"] in response.json()["error"]["message"]
    product_client.post(f"/api/v1/webhooks/{endpoint['id']}/disable")
    assert product_client.delete(f"/api/v1/connections/{connection.id}").status_code == 204
    assert product_client.get(f"/api/v1/connections/{connection.id}").status_code == 404
    assert product_client.get("/api/v1/connections").json() == []
    with admin_connect(CUSTOMER_DB) as admin:
        live = admin.execute(
            "SELECT count(*) FROM pg_trigger t JOIN pg_proc p ON p.oid = t.tgfoid "
            "WHERE t.tgname LIKE 'rb\\_%' AND p.proname <> 'rb_retired'"
        ).fetchone()[0]
    assert live == 0
    assert AuditEvent.objects.filter(action="connection.deleted").exists()
    # The schema is free again: a new connection to it is accepted.
    fresh = _connect(
        product_client,
        {
            "host": connection.host,
            "port": connection.port,
            "database": connection.database,
            "user": connection.user,
            "password": connection.password,
        },
        "shop",
    )
    assert fresh.status_code == 201, fresh.json()


def test_writes_succeed_when_rowbells_event_log_is_gone_and_the_tick_puts_it_back(product_client, connection):
    _subscribe(product_client, connection, "public.orders", events=["row.created", "row.deleted"])
    with admin_connect(CUSTOMER_DB) as admin:
        admin.execute("ALTER TABLE rowbell.event_log RENAME TO event_log_old")
    with writer_connect() as app:  # failed with `relation "rowbell.event_log" does not exist`
        app.execute("INSERT INTO public.orders (status) VALUES ('a')")
        app.execute("DELETE FROM public.orders")
    health = product_client.get(f"/api/v1/connections/{connection.id}/health").json()
    assert any(p["kind"] == "missing_event_log" for p in health["capture_problems"])
    connections_health_refresh()
    with writer_connect() as app:
        app.execute("INSERT INTO public.orders (status) VALUES ('b')")
    assert [op for op, _ in _events(connection)] == ["insert"]


def test_a_detached_partition_is_no_longer_reported_as_the_parent(product_client, connection, partitioned):
    _subscribe(product_client, connection, partitioned, events=["row.created"])
    with admin_connect(CUSTOMER_DB) as admin:
        admin.execute("ALTER TABLE public.events DETACH PARTITION public.events_2026")
    health = product_client.get(f"/api/v1/connections/{connection.id}/health").json()
    assert any(p["kind"] == "stray_trigger" and "events_2026" in p["detail"] for p in health["capture_problems"])
    connections_health_refresh()  # retires its triggers
    try:
        with writer_connect() as app:
            app.execute("INSERT INTO public.events_2026 VALUES (1, '2026-05-01', 'a')")
        assert _events(connection) == []
        assert product_client.get(f"/api/v1/connections/{connection.id}/health").json()["capture_problems"] == []
    finally:
        with admin_connect(CUSTOMER_DB) as admin:
            admin.execute("DROP TABLE public.events_2026")


def test_a_renamed_enum_label_is_noticed_before_any_write_and_a_repair_clears_a_fixed_error(product_client, connection):
    with admin_connect(CUSTOMER_DB) as admin:
        admin.execute("DROP TABLE IF EXISTS public.deals; DROP TYPE IF EXISTS deal_state")
        admin.execute(
            "CREATE TYPE deal_state AS ENUM ('open', 'won'); "
            "CREATE TABLE public.deals (id int PRIMARY KEY, state deal_state, note text)"
        )
        _grant(admin, "public.deals")
    try:
        _subscribe(
            product_client,
            connection,
            "public.deals",
            classification={"name": "won", "predicate": {"column": "state", "op": "eq", "value": "won"}},
        )
        with admin_connect(CUSTOMER_DB) as admin:
            admin.execute("ALTER TYPE deal_state RENAME VALUE 'won' TO 'closed'")
        health = product_client.get(f"/api/v1/connections/{connection.id}/health").json()
        [problem] = health["capture_problems"]
        assert (
            problem["kind"] == "invalid_value"
            and "'won'" in problem["detail"]
            and "Correct the source" in problem["detail"]
        )
        with writer_connect() as app:
            app.execute("INSERT INTO public.deals VALUES (1, 'open', 'x')")  # the write goes on: an error event
        _events(connection)
        connections_health_refresh()
        connection.refresh_from_db()
        assert {p["kind"] for p in connection.capture_problems} == {"invalid_value", "trigger_error"}
        # The label is put back; an operator's repair acknowledges the error the trigger gave meanwhile.
        with admin_connect(CUSTOMER_DB) as admin:
            admin.execute("ALTER TYPE deal_state RENAME VALUE 'closed' TO 'won'")
        from apps.connections.services import connection_repair

        connection_repair(connection_id=connection.id, actor="test")
        connection.refresh_from_db()
        assert connection.capture_problems == []
    finally:
        with admin_connect(CUSTOMER_DB) as admin:
            admin.execute("DROP TABLE IF EXISTS public.deals; DROP TYPE IF EXISTS deal_state")


@pytest.mark.parametrize(
    "source, reason",
    [
        ({"table": "rowbell.event_log", "events": ["row.created"]}, "Rowbell’s own schema"),
        ({"table": "pg_catalog.pg_class", "events": ["row.created"]}, "a system schema"),
        (
            {
                "table": "public.orders",
                "classification": {"name": "late", "predicate": {"column": "status", "op": "eq", "value": "x"}},
            },
            None,
        ),
    ],
)
def test_sources_rowbell_cannot_or_can_watch(product_client, connection, source, reason):
    response = product_client.post(
        "/api/v1/webhooks",
        {"url": "http://127.0.0.1:9/x", "source": {"connection": str(connection.id), **source}},
        format="json",
    )
    if reason is None:
        assert response.status_code == 201, response.json()
    else:
        assert response.status_code == 400 and reason in response.json()["error"]["fields"][0]["reason"]
