"""A database trigger starts one run per affected row by default (`for_each: row`), each seeing its own
`row`; `for_each: statement` keeps one run per statement with `rows`. Runs are launched in bulk, once."""

import json

import pytest
from django.db import connection as service_db
from django.test.utils import CaptureQueriesContext
from standardwebhooks.webhooks import Webhook

from apps.connections.models import Event
from apps.deliveries.models import Delivery, DeliveryStatus
from apps.deliveries.services import deliveries_send
from apps.runs.models import Run, RunStatus
from apps.runs.services import runs_execute
from apps.runs.triggers.database import runs_for_events

from .conftest import pickup_rewind, poll, writer_connect

pytestmark = pytest.mark.django_db(transaction=True)


def _endpoint(client, receiver):
    response = client.post("/api/v1/webhooks", {"url": receiver.url()}, format="json")
    assert response.status_code == 201, response.json()
    return response.json()


def _workflow(client, connection, steps, *, key="order-paid", events=("row.updated",), **trigger):
    response = client.post(
        "/api/v1/workflows",
        {
            "key": key,
            "trigger": {
                "type": "database",
                "connection": str(connection.id),
                "table": "public.orders",
                "events": list(events),
                **trigger,
            },
            "steps": steps,
        },
        format="json",
    )
    assert response.status_code == 201, response.json()
    published = client.post(f"/api/v1/workflows/{key}/publish")
    assert published.status_code == 201, published.json()
    return response.json()


def _run_queued():
    """What the worker does, until nothing is queued (a run waits for its webhook's outcome, then goes on)."""
    for _ in range(10):
        runs = list(Run.objects.filter(status=RunStatus.QUEUED).values_list("id", flat=True))
        deliveries = list(Delivery.objects.filter(status=DeliveryStatus.QUEUED).values_list("id", flat=True))
        if not runs and not deliveries:
            return
        runs_execute(run_ids=runs)
        deliveries_send(delivery_ids=deliveries)


def _orders(count):
    with writer_connect() as app:
        app.execute("INSERT INTO public.orders (status, total) SELECT 'new', g FROM generate_series(1, %s) g", [count])


def test_by_default_one_update_of_three_rows_starts_three_runs_each_with_its_own_row(
    product_client, receiver, connection
):
    endpoint = _endpoint(product_client, receiver)
    created = _workflow(
        product_client,
        connection,
        [
            {"id": "hook", "type": "notify", "channel": "webhook", "webhook": endpoint["id"]},
            {
                "id": "mail",
                "type": "notify",
                "channel": "email",
                "to": "order-{{ row.id }}@example.com",
                "subject": "Order {{ row.id }} is {{ row.status }}",
                "body": "Total {{ row.total }}",
            },
        ],
    )
    assert created["trigger"]["for_each"] == "row"
    _orders(5)
    poll(connection_id=connection.id)
    with writer_connect() as app:
        app.execute("UPDATE public.orders SET status = 'paid' WHERE id IN (3, 4, 5)")
    poll(connection_id=connection.id)

    event = Event.objects.get(op="update")
    runs = list(Run.objects.filter(event=event).order_by("recipient_index"))
    assert [r.recipient_index for r in runs] == [0, 1, 2]
    _run_queued()

    assert {r.status for r in Run.objects.filter(event=event)} == {RunStatus.COMPLETED}
    emails = sorted(Delivery.objects.filter(channel="email").values_list("target", "payload"))
    assert [(target, payload["subject"]) for target, payload in emails] == [
        ("order-3@example.com", "Order 3 is paid"),
        ("order-4@example.com", "Order 4 is paid"),
        ("order-5@example.com", "Order 5 is paid"),
    ]
    assert receiver.wait_for(3)
    ids = sorted(
        Webhook(endpoint["secret"]).verify(r["body"], r["headers"])["data"]["event"]["ids"] for r in receiver.requests
    )
    assert ids == [[3], [4], [5]]  # each webhook names its own row
    listed = product_client.get("/api/v1/runs", {"workflow": "order-paid"}).json()["results"]
    assert sorted(r["event"]["ids"] for r in listed) == [[3], [4], [5]]


def test_for_each_statement_keeps_one_run_per_statement_with_rows(product_client, receiver, connection):
    _workflow(
        product_client,
        connection,
        [
            {
                "id": "mail",
                "type": "notify",
                "channel": "email",
                "to": "ops@example.com",
                "subject": "{{ rows | length }} orders paid",
                "body": "{% for r in rows %}{{ r.id }} {% endfor %}",
            }
        ],
        for_each="statement",
    )
    _orders(3)
    poll(connection_id=connection.id)
    with writer_connect() as app:
        app.execute("UPDATE public.orders SET status = 'paid'")
    poll(connection_id=connection.id)
    assert Run.objects.count() == 1
    _run_queued()
    delivery = Delivery.objects.get()
    assert delivery.payload["subject"] == "3 orders paid" and delivery.payload["text"].split() == ["1", "2", "3"]


def test_a_per_row_template_that_reads_rows_is_refused_at_save_with_the_way_out(product_client, connection):
    response = product_client.post(
        "/api/v1/workflows",
        {
            "key": "k",
            "trigger": {
                "type": "database",
                "connection": str(connection.id),
                "table": "public.orders",
                "events": ["row.updated"],
            },
            "steps": [
                {
                    "type": "notify",
                    "channel": "email",
                    "to": "ops@example.com",
                    "subject": "s",
                    "body": "{{ rows | length }}",
                }
            ],
        },
        format="json",
    )
    assert response.status_code == 400
    fields = {f["field"]: f["reason"] for f in response.json()["error"]["fields"]}
    assert "for_each: statement" in fields["steps[0].body"], fields


def test_a_deleted_row_s_run_sees_its_key_columns_as_row(product_client, receiver, connection):
    _workflow(
        product_client,
        connection,
        [
            {
                "id": "mail",
                "type": "notify",
                "channel": "email",
                "to": "ops@example.com",
                "subject": "Order {{ row.id }} deleted",
                "body": "-",
            }
        ],
        events=("row.deleted",),
    )
    _orders(2)
    poll(connection_id=connection.id)
    with writer_connect() as app:
        app.execute("DELETE FROM public.orders")
    poll(connection_id=connection.id)
    _run_queued()
    assert sorted(Delivery.objects.values_list("payload__subject", flat=True)) == [
        "Order 1 deleted",
        "Order 2 deleted",
    ]


def test_a_large_statement_starts_its_runs_in_bulk_and_a_second_reading_starts_none(
    product_client, receiver, connection
):
    endpoint = _endpoint(product_client, receiver)
    _workflow(
        product_client,
        connection,
        [{"id": "hook", "type": "notify", "channel": "webhook", "webhook": endpoint["id"]}],
        events=("row.created",),
    )
    rows = 12_000
    _orders(rows)
    poll(connection_id=connection.id)
    event = Event.objects.get()
    assert Run.objects.filter(event=event).count() == rows
    assert sorted(set(Run.objects.values_list("recipient_index", flat=True))) == list(range(rows))

    # The same event launched again (a re-read after a crash) starts nothing, in as few statements.
    with CaptureQueriesContext(service_db) as queries:
        assert runs_for_events(events=[event]) == []
    assert len(queries) <= 6, [q["sql"][:80] for q in queries]
    pickup_rewind(connection)
    poll(connection_id=connection.id)
    assert Run.objects.count() == rows


def test_definitions_saved_before_for_each_keep_running_per_statement():
    from importlib import import_module

    migration = import_module("apps.workflows.migrations.0004_database_triggers_for_each_statement")
    statement = migration.Migration.operations[0].sql[0]
    with service_db.cursor() as cursor:
        cursor.execute("CREATE TEMP TABLE workflows_workflowversion_copy (id int, definition jsonb)")
    old = {"trigger": {"type": "database", "connection": "c", "table": "public.orders"}, "steps": []}
    new = {**old, "trigger": {**old["trigger"], "for_each": "row"}}
    api = {"trigger": {"type": "api"}, "steps": []}
    with service_db.cursor() as cursor:
        cursor.execute(
            "INSERT INTO workflows_workflowversion_copy (id, definition) VALUES (1, %s), (2, %s), (3, %s)",
            [json.dumps(old), json.dumps(new), json.dumps(api)],
        )
        cursor.execute(statement.replace("workflows_workflowversion", "workflows_workflowversion_copy"))
        cursor.execute("SELECT id, definition FROM workflows_workflowversion_copy ORDER BY id")
        stored = {i: (d if isinstance(d, dict) else json.loads(d)) for i, d in cursor.fetchall()}
    assert stored[1]["trigger"]["for_each"] == "statement"
    assert stored[2]["trigger"]["for_each"] == "row"
    assert "for_each" not in stored[3]["trigger"]


def test_the_rows_of_a_batch_of_per_row_runs_are_read_in_one_query(product_client, connection, monkeypatch):
    from apps.runs.triggers import database

    _workflow(
        product_client,
        connection,
        [
            {
                "id": "mail",
                "type": "notify",
                "channel": "email",
                "to": "order-{{ row.id }}@example.com",
                "subject": "Order {{ row.id }}: {{ row.total }}",
                "body": "-",
            }
        ],
    )
    _orders(60)
    poll(connection_id=connection.id)
    with writer_connect() as app:
        app.execute("DELETE FROM public.orders WHERE id = 7")
        app.execute("UPDATE public.orders SET status = 'paid' WHERE id > 10")  # 50 rows, no 7
        app.execute("UPDATE public.orders SET status = 'paid' WHERE id <= 10")  # 9 rows
    poll(connection_id=connection.id)
    reads, locked = [], []
    one_query = database.rows_read_indexed

    def counted(**kwargs):
        reads.append(len(kwargs["ids"]))
        locked.append(service_db.in_atomic_block)  # read while the batch holds its runs' locks?
        return one_query(**kwargs)

    def per_run(**kwargs):
        raise AssertionError("read one run at a time")

    monkeypatch.setattr(database, "rows_read_indexed", counted)
    monkeypatch.setattr(database, "rows_read", per_run)
    runs_execute(run_ids=list(Run.objects.filter(status=RunStatus.QUEUED).values_list("id", flat=True)))

    assert reads == [59] and locked == [False]  # one query, before the batch locks its runs
    subjects = sorted(Delivery.objects.values_list("payload__subject", flat=True), key=lambda s: int(s.split()[1][:-1]))
    assert len(subjects) == 59 and subjects[0] == "Order 1: 1.00" and subjects[-1] == "Order 60: 60.00"
    assert "Order 7: 7.00" not in subjects
    assert set(Run.objects.values_list("status", flat=True)) == {RunStatus.COMPLETED}
