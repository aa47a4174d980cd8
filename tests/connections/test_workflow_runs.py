"""Workflows started by row changes: a `database` trigger installs its capture on publish, and every
recorded event launches one run per published version, never two."""

import pytest
from django.db import IntegrityError, transaction
from standardwebhooks.webhooks import Webhook

from apps.audit.models import AuditEvent
from apps.connections.capture import captures_installed
from apps.connections.customer import customer_connect
from apps.connections.models import Connection, Event
from apps.deliveries.models import Delivery, DeliveryStatus
from apps.deliveries.services import deliveries_send
from apps.runs.models import Escalation, Run, RunStatus
from apps.runs.services import runs_execute
from apps.workflows.models import Workflow

from .conftest import admin_connect, pickup_rewind, poll, writer_connect

pytestmark = pytest.mark.django_db(transaction=True)


def _endpoint(client, receiver):
    response = client.post("/api/v1/webhooks", {"url": receiver.url()}, format="json")
    assert response.status_code == 201, response.json()
    return response.json()


def _workflow(client, connection, endpoint, key="order-created", **trigger):
    trigger = {
        "type": "database",
        "connection": str(connection.id),
        "table": "public.orders",
        **(trigger or {"events": ["row.created"]}),
    }
    response = client.post(
        "/api/v1/workflows",
        {
            "key": key,
            "trigger": trigger,
            "steps": [{"id": "hook", "type": "notify", "channel": "webhook", "webhook": endpoint["id"]}],
        },
        format="json",
    )
    assert response.status_code == 201, response.json()
    return response


def _publish(client, key="order-created"):
    return client.post(f"/api/v1/workflows/{key}/publish")


def _run_queued():
    runs_execute(run_ids=list(Run.objects.filter(status=RunStatus.QUEUED).values_list("id", flat=True)))
    deliveries_send(
        delivery_ids=list(Delivery.objects.filter(status=DeliveryStatus.QUEUED).values_list("id", flat=True))
    )


def test_publishing_installs_the_trigger_and_a_row_change_launches_one_run(product_client, receiver, connection):
    endpoint = _endpoint(product_client, receiver)
    created = _workflow(product_client, connection, endpoint, events=["row.created"], for_each="statement").json()
    assert created["trigger"] == {
        "type": "database",
        "connection": str(connection.id),
        "table": "public.orders",
        "events": ["row.created"],
        "columns": [],
        "for_each": "statement",
    }
    with customer_connect(connection) as conn:
        assert captures_installed(conn, schema="rowbell") == {}  # a draft installs nothing
    response = _publish(product_client)
    assert response.status_code == 201, response.json()
    version = Workflow.objects.get(key="order-created").published_version
    with customer_connect(connection) as conn:
        assert version.capture in captures_installed(conn, schema="rowbell")

    with writer_connect() as app:
        app.execute("INSERT INTO public.orders (status) VALUES ('new'), ('new')")  # one statement, one event
        app.execute("UPDATE public.orders SET status = 'paid'")  # not watched
    poll(connection_id=connection.id)
    run = Run.objects.get()
    assert run.workflow_version == version and run.request is None and run.event.ids == [1, 2]
    assert AuditEvent.objects.filter(action="run.launched", target_id=str(run.id)).exists()
    _run_queued()

    assert receiver.wait_for(1)
    body = Webhook(endpoint["secret"]).verify(receiver.requests[0]["body"], receiver.requests[0]["headers"])
    assert body["data"]["workflow"] == "order-created"
    assert body["data"]["event"] == {
        "id": f"evt_{run.event_id}",
        "type": "row.created",
        "table": "public.orders",
        "ids": [1, 2],
        "occurred_at": run.event.captured_at.isoformat(),
    }

    listed = product_client.get("/api/v1/runs", {"workflow": "order-created"}).json()["results"]
    assert [(r["id"], r["status"], r["request_id"], r["event"]["ids"]) for r in listed] == [
        (run.id, "completed", None, [1, 2])
    ]
    detail = product_client.get(f"/api/v1/runs/{run.id}").json()
    assert [s["step"] for s in detail["steps"]] == ["hook"]
    assert [d["status"] for d in detail["deliveries"]] == ["delivered"]


def test_an_event_read_twice_launches_its_run_once(product_client, receiver, connection):
    _workflow(product_client, connection, _endpoint(product_client, receiver))
    _publish(product_client)
    with writer_connect() as app:
        app.execute("INSERT INTO public.orders (status) VALUES ('a')")
    poll(connection_id=connection.id)
    pickup_rewind(connection)  # read it all again
    poll(connection_id=connection.id)
    assert Run.objects.count() == 1 and Event.objects.count() == 1

    run = Run.objects.get()
    with pytest.raises(IntegrityError), transaction.atomic():  # the database itself refuses a second
        Run.objects.create(
            source=run.source,
            cause_id=run.cause_id,
            event=run.event,
            workflow_version=run.workflow_version,
            product_id=run.product_id,
            recipient={},
        )


def test_runs_keep_their_version_and_each_published_version_runs_once_per_event(product_client, receiver, connection):
    endpoint = _endpoint(product_client, receiver)
    _workflow(product_client, connection, endpoint)
    _workflow(product_client, connection, endpoint, key="order-audit")  # the same capture, another workflow
    _publish(product_client)
    _publish(product_client, "order-audit")
    with writer_connect() as app:
        app.execute("INSERT INTO public.orders (status) VALUES ('a')")
    poll(connection_id=connection.id)
    assert sorted(Run.objects.values_list("workflow_version__workflow__key", flat=True)) == [
        "order-audit",
        "order-created",
    ]

    # Version 2 watches deletes instead: later events run it, the earlier run keeps version 1.
    product_client.put(
        "/api/v1/workflows/order-created",
        {
            "trigger": {
                "type": "database",
                "connection": str(connection.id),
                "table": "public.orders",
                "events": ["row.deleted"],
            },
            "steps": [{"id": "hook", "type": "notify", "channel": "webhook", "webhook": endpoint["id"]}],
        },
        format="json",
    )
    assert _publish(product_client).status_code == 201
    with writer_connect() as app:
        app.execute("INSERT INTO public.orders (status) VALUES ('b')")
        app.execute("DELETE FROM public.orders")
    poll(connection_id=connection.id)
    runs = [
        (r.workflow_version.workflow.key, r.workflow_version.version, r.event.op)
        for r in Run.objects.select_related("workflow_version__workflow", "event").order_by("id")
    ]
    assert sorted(runs[:2]) == [("order-audit", 1, "insert"), ("order-created", 1, "insert")]
    # One run per deleted row (the trigger's default `for_each: row`): 'a' and 'b'.
    assert sorted(runs[2:]) == [
        ("order-audit", 1, "insert"),
        ("order-created", 2, "delete"),
        ("order-created", 2, "delete"),
    ]


def test_unpublishing_stops_new_runs_and_retires_the_unused_trigger(product_client, receiver, connection):
    _workflow(product_client, connection, _endpoint(product_client, receiver))
    _publish(product_client)
    version = Workflow.objects.get(key="order-created").published_version
    response = product_client.post("/api/v1/workflows/order-created/unpublish")
    assert response.status_code == 200 and response.json()["published_version"] is None
    with customer_connect(connection) as conn:
        assert version.capture not in captures_installed(conn, schema="rowbell")
    with writer_connect() as app:
        app.execute("INSERT INTO public.orders (status) VALUES ('a')")
    poll(connection_id=connection.id)
    assert not Run.objects.exists()
    assert AuditEvent.objects.filter(action="workflow.unpublished", target_id="order-created").exists()
    trigger = product_client.post("/api/v1/trigger", {"workflow": "order-created", "to": ["u1"]}, format="json")
    assert trigger.status_code == 400 and "publish it first" in trigger.json()["error"]["fields"][0]["reason"]


def test_a_trigger_call_to_a_workflow_started_by_row_changes_is_refused_naming_why(
    product_client, receiver, connection
):
    _workflow(product_client, connection, _endpoint(product_client, receiver))
    _publish(product_client)
    trigger = product_client.post("/api/v1/trigger", {"workflow": "order-created", "to": ["u1"]}, format="json")
    assert trigger.status_code == 400, trigger.json()
    [field] = trigger.json()["error"]["fields"]
    assert field["field"] == "workflow" and "started by changes to rows of public.orders" in field["reason"]
    assert "/api/v1/workflows/order-created/backfill" in field["reason"]
    assert not Run.objects.exists()


@pytest.mark.parametrize(
    "trigger, field",
    [
        ({"table": "public.nope", "events": ["row.created"]}, "trigger.table"),
        ({"table": "public.no_pk", "events": ["row.created"]}, "trigger.table"),
        ({"table": "public.orders", "events": ["row.exploded"]}, "trigger.events"),
        ({"table": "public.orders", "events": ["row.updated"], "columns": ["nope"]}, "trigger.columns[0]"),
        (
            {
                "table": "public.orders",
                "classification": {
                    "name": "paid",
                    "predicate": {"column": "paid", "op": "eq", "value": "yes; DROP TABLE orders"},
                },
            },
            "trigger.classification.predicate.value",
        ),
        ({"table": "public.orders", "events": ["row.created"], "sql": "SELECT 1"}, "trigger.sql"),
    ],
)
def test_a_bad_database_trigger_names_the_field_and_installs_nothing(
    product_client, receiver, connection, trigger, field
):
    endpoint = _endpoint(product_client, receiver)
    response = product_client.post(
        "/api/v1/workflows",
        {
            "key": "bad",
            "trigger": {"type": "database", "connection": str(connection.id), **trigger},
            "steps": [{"type": "notify", "channel": "webhook", "webhook": endpoint["id"]}],
        },
        format="json",
    )
    assert response.status_code == 400, response.json()
    assert field in [f["field"] for f in response.json()["error"]["fields"]]
    assert not Workflow.objects.exists()
    with customer_connect(connection) as conn:
        assert captures_installed(conn, schema="rowbell") == {}


def test_a_connection_of_another_product_is_refused(product_client, receiver, connection):
    from apps.tenants.services import product_create

    connection.product, _ = product_create(name="other", actor="test")
    connection.save()
    response = product_client.post(
        "/api/v1/workflows",
        {
            "key": "x",
            "trigger": {
                "type": "database",
                "connection": str(connection.id),
                "table": "public.orders",
                "events": ["row.created"],
            },
            "steps": [{"type": "notify", "channel": "webhook", "webhook": _endpoint(product_client, receiver)["id"]}],
        },
        format="json",
    )
    assert response.status_code == 400
    assert response.json()["error"]["fields"][0]["field"] == "trigger.connection"


def test_a_failed_install_publishes_nothing(product_client, receiver, connection):
    _workflow(product_client, connection, _endpoint(product_client, receiver))
    with admin_connect("rowbell_customer_test") as admin:  # the DBA takes the trigger privilege away
        admin.execute(f"REVOKE TRIGGER ON public.orders FROM {connection.user}")
    try:
        response = _publish(product_client)
    finally:
        with admin_connect("rowbell_customer_test") as admin:
            admin.execute(f"GRANT TRIGGER ON public.orders TO {connection.user}")
    # Refused before anything is installed, naming the GRANT that fixes it.
    assert response.status_code == 400, response.json()
    [field] = response.json()["error"]["fields"]
    assert field["field"] == "trigger.table"
    assert f'GRANT TRIGGER ON TABLE "public"."orders" TO "{connection.user}"' in field["reason"]
    assert Workflow.objects.get(key="order-created").published_version is None
    with customer_connect(connection) as conn:
        assert captures_installed(conn, schema="rowbell") == {}


def _mail_workflow(client, connection, key="shipped", steps=None, **trigger):
    trigger = {
        "type": "database",
        "connection": str(connection.id),
        "table": "public.orders",
        **(trigger or {"events": ["row.created"]}),
    }
    response = client.post("/api/v1/workflows", {"key": key, "trigger": trigger, "steps": steps}, format="json")
    assert response.status_code == 201, response.json()
    assert client.post(f"/api/v1/workflows/{key}/publish").status_code == 201


def test_steps_see_the_row_as_it_is_when_the_run_starts(product_client, connection):
    from django.core import mail

    _mail_workflow(
        product_client,
        connection,
        steps=[
            {
                "type": "notify",
                "channel": "email",
                "to": "orders@example.com",
                "subject": "Order {{ row.id }}",
                "body": "{{ row.status }} {{ row.total }} ({{ event.type }} on {{ event.table }})",
            }
        ],
    )
    with writer_connect() as app:
        app.execute("INSERT INTO public.orders (status, total) VALUES ('new', 12.5)")
        app.execute("UPDATE public.orders SET status = 'paid'")  # before the run starts
    poll(connection_id=connection.id)
    _run_queued()
    assert mail.outbox[0].subject == "Order 1"
    assert mail.outbox[0].body == "paid 12.50 (row.created on public.orders)"  # numeric(10,2): every digit


def test_a_deleted_row_is_absent_and_its_id_listed(product_client, connection):
    _mail_workflow(
        product_client,
        connection,
        events=["row.created"],
        for_each="statement",
        steps=[
            {
                "type": "notify",
                "channel": "email",
                "to": "orders@example.com",
                "subject": "{{ missing_ids }}",
                "body": "{{ row.status }}",
            }
        ],
    )
    with writer_connect() as app:
        app.execute("INSERT INTO public.orders (status) VALUES ('new')")
        app.execute("DELETE FROM public.orders")
    poll(connection_id=connection.id)
    _run_queued()
    run = Run.objects.get()
    assert run.status == RunStatus.FAILED and "Missing variable 'row'" in run.error
    assert run.state["missing_ids"] == [1] and run.state["rows"] == []


def test_a_to_naming_row_fails_a_run_of_several_rows_instead_of_skipping_it(product_client, connection):
    _mail_workflow(
        product_client,
        connection,
        events=["row.created"],
        for_each="statement",
        steps=[
            {"id": "mail", "type": "notify", "channel": "email", "to": "{{ row.email }}", "subject": "s", "body": "b"}
        ],
    )
    with writer_connect() as app:
        app.execute("INSERT INTO public.orders (status) VALUES ('a'), ('b'), ('c')")  # one statement: no `row`
    poll(connection_id=connection.id)
    _run_queued()
    run = Run.objects.get()
    assert len(run.state["rows"]) == 3 and "row" not in run.state
    assert run.status == RunStatus.FAILED
    assert run.error == "Step 'mail', field 'to': Missing variable 'row'."
    assert Escalation.objects.filter(run=run, error=run.error).exists()
    assert not Delivery.objects.filter(run=run, status=DeliveryStatus.SKIPPED).exists()


def test_a_to_naming_a_column_the_row_lacks_fails_the_run(product_client, connection):
    _mail_workflow(
        product_client,
        connection,
        steps=[
            {"id": "mail", "type": "notify", "channel": "email", "to": "{{ row.email }}", "subject": "s", "body": "b"}
        ],
    )
    with writer_connect() as app:
        app.execute("INSERT INTO public.orders (status) VALUES ('a')")  # orders has no email column
    poll(connection_id=connection.id)
    _run_queued()
    run = Run.objects.get()
    assert run.status == RunStatus.FAILED
    assert run.error == "Step 'mail', field 'to': Missing variable 'email' (row.email)."
    assert Escalation.objects.filter(run=run).exists()
    assert not Delivery.objects.filter(run=run).exists()


def test_a_to_naming_a_related_row_the_row_lacks_fails_the_run_and_the_others_send(product_client, connection):
    from django.core import mail

    _mail_workflow(
        product_client,
        connection,
        events=["row.created"],
        related={"customer": {"table": "public.customers", "column": "customer_id"}},
        steps=[
            {
                "id": "mail",
                "type": "notify",
                "channel": "email",
                "to": "{{ customer.email }}",
                "subject": "s",
                "body": "b",
            }
        ],
    )
    with writer_connect() as app:
        app.execute("INSERT INTO public.customers (email) VALUES ('ann@example.com')")
        app.execute("INSERT INTO public.orders (customer_id) VALUES (1), (NULL)")  # one run per row
    poll(connection_id=connection.id)
    _run_queued()
    runs = {run.state["rows"][0]["id"]: run for run in Run.objects.all()}
    assert runs[1].status == RunStatus.COMPLETED and [m.to for m in mail.outbox] == [["ann@example.com"]]
    assert runs[2].status == RunStatus.FAILED
    assert runs[2].error == "Step 'mail', field 'to': Missing variable 'customer'."
    assert Escalation.objects.filter(run=runs[2]).exists()
    assert not Delivery.objects.filter(run=runs[2]).exists()


def test_wait_until_the_row_meets_a_condition(product_client, connection):
    from datetime import timedelta

    from django.core import mail
    from django.utils import timezone

    from apps.runs.engine import runs_resume_due

    _mail_workflow(
        product_client,
        connection,
        steps=[
            {
                "id": "paid",
                "type": "wait",
                "condition": {"column": "row.paid", "op": "eq", "value": True},
                "timeout": "1d",
                "every": "1m",
            },
            {
                "type": "notify",
                "channel": "email",
                "to": "orders@example.com",
                "subject": "Paid: {{ row.id }}",
                "body": "timed out: {{ steps.paid.timed_out }}",
            },
        ],
    )
    with writer_connect() as app:
        app.execute("INSERT INTO public.orders (status) VALUES ('new')")
    poll(connection_id=connection.id)
    _run_queued()
    run = Run.objects.get()
    run.refresh_from_db()
    assert (run.status, run.waiting_on) == (RunStatus.WAITING, "condition")
    with writer_connect() as app:
        app.execute("UPDATE public.orders SET paid = true")
    Run.objects.filter(id=run.id).update(resume_at=timezone.now() - timedelta(seconds=1))
    assert runs_resume_due() == 1
    _run_queued()
    assert mail.outbox[0].subject == "Paid: 1" and mail.outbox[0].body == "timed out: False"


def test_an_unreachable_database_is_retried_with_back_off_then_fails_and_escalates(product_client, connection):
    from apps.runs.models import Escalation

    product_client.post(
        "/api/v1/workflows",
        {
            "key": "r",
            "retry": {"max_attempts": 2, "backoff": "1m"},
            "trigger": {
                "type": "database",
                "connection": str(connection.id),
                "table": "public.orders",
                "events": ["row.created"],
            },
            "steps": [
                {"type": "notify", "channel": "email", "to": "a@example.com", "subject": "{{ row.id }}", "body": "b"}
            ],
        },
        format="json",
    )
    product_client.post("/api/v1/workflows/r/publish")
    with writer_connect() as app:
        app.execute("INSERT INTO public.orders (status) VALUES ('new')")
    poll(connection_id=connection.id)
    Connection.objects.filter(id=connection.id).update(port=1)  # the database goes away
    _run_queued()
    run = Run.objects.get()
    run.refresh_from_db()
    assert (run.status, run.waiting_on) == (RunStatus.WAITING, "retry")
    assert AuditEvent.objects.filter(action="run.retry_scheduled", target_id=str(run.id)).exists()
    Run.objects.filter(id=run.id).update(status=RunStatus.QUEUED)
    _run_queued()
    run.refresh_from_db()
    assert run.status == RunStatus.FAILED and "gave up after 2 attempts" in run.error
    assert Escalation.objects.filter(run=run).exists()
