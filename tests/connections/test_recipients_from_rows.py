"""Recipients from the customer's rows: a per-row trigger maps columns of its row, or of a related row read by
key (`orders.customer_id` -> `customers`), to the recipient; templates see `row`, the related rows by name and
`recipient`. Checked at save against the customer's tables."""

import pytest

from apps.audit.models import AuditEvent
from apps.deliveries.models import Delivery
from apps.runs.models import Run, RunStatus
from apps.runs.services import runs_execute

from .conftest import poll, writer_connect

pytestmark = pytest.mark.django_db(transaction=True)

RELATED = {"customer": {"table": "public.customers", "column": "customer_id"}}
RECIPIENT = {"id": "customer.id", "email": "customer.email", "name": "customer.name"}
EMAIL = {
    "id": "mail",
    "type": "notify",
    "channel": "email",
    "to": "{{ recipient.email }}",
    "subject": "Order {{ row.id }} is paid, {{ customer.name }}",
    "body": "Hello {{ recipient.name }}",
}


def _create(client, connection, *, steps=(EMAIL,), key="order-paid", **trigger):
    return client.post(
        "/api/v1/workflows",
        {
            "key": key,
            "trigger": {
                "type": "database",
                "connection": str(connection.id),
                "table": "public.orders",
                "events": ["row.updated"],
                **trigger,
            },
            "steps": list(steps),
        },
        format="json",
    )


def _fields(response) -> dict:
    return {f["field"]: f["reason"] for f in response.json()["error"].get("fields", [])}


def _customers_with_orders():
    with writer_connect() as app:
        app.execute(
            "INSERT INTO public.customers (email, name) VALUES ('ann@example.com', 'Ann'), "
            "('bob@example.com', 'Bob'), ('cy@example.com', 'Cy')"
        )
        app.execute(
            "INSERT INTO public.orders (customer_id, total) VALUES (1, 10), (2, 20), (3, 30), (1, 40), (NULL, 50)"
        )


def test_one_update_emails_each_order_s_own_customer(product_client, connection):
    response = _create(product_client, connection, related=RELATED, recipient=RECIPIENT)
    assert response.status_code == 201, response.json()
    stored = response.json()["trigger"]
    assert stored["related"]["customer"]["key"] == "id"  # the column the foreign key references
    published = product_client.post("/api/v1/workflows/order-paid/publish")
    assert published.status_code == 201, published.json()
    _customers_with_orders()
    poll(connection_id=connection.id)
    with writer_connect() as app:
        app.execute("UPDATE public.orders SET paid = true WHERE id IN (1, 2, 3, 5)")
    poll(connection_id=connection.id)
    runs_execute(run_ids=list(Run.objects.filter(status=RunStatus.QUEUED).values_list("id", flat=True)))

    sent = sorted((d.target, d.payload.get("subject"), d.payload.get("text"), d.status) for d in Delivery.objects.all())
    assert sent == [
        ("", None, None, "skipped"),  # order 5 has no customer: no address for the channel, the meant skip
        ("ann@example.com", "Order 1 is paid, Ann", "Hello Ann", "sent"),
        ("bob@example.com", "Order 2 is paid, Bob", "Hello Bob", "sent"),
        ("cy@example.com", "Order 3 is paid, Cy", "Hello Cy", "sent"),
    ]
    recipients = sorted(r["recipient"].get("email", "") for r in product_client.get("/api/v1/runs").json()["results"])
    assert recipients == ["", "ann@example.com", "bob@example.com", "cy@example.com"]


def test_a_batch_reads_each_related_table_once(product_client, connection, monkeypatch):
    from apps.runs.triggers import database
    from apps.workflows import row_links

    assert _create(product_client, connection, related=RELATED, recipient=RECIPIENT).status_code == 201
    published = product_client.post("/api/v1/workflows/order-paid/publish")
    assert published.status_code == 201, published.json()
    _customers_with_orders()
    poll(connection_id=connection.id)
    with writer_connect() as app:
        app.execute("UPDATE public.orders SET paid = true")
    poll(connection_id=connection.id)
    reads = []
    one_query = database.rows_read_indexed

    def counted(**kwargs):
        reads.append((kwargs["rows_from"]["table"], len(kwargs["ids"])))
        return one_query(**kwargs)

    monkeypatch.setattr(database, "rows_read_indexed", counted)
    monkeypatch.setattr(row_links, "rows_read_indexed", counted)
    runs_execute(run_ids=list(Run.objects.filter(status=RunStatus.QUEUED).values_list("id", flat=True)))
    assert reads == [("public.orders", 5), ("public.customers", 4)]


@pytest.mark.parametrize(
    ("trigger", "field", "says"),
    [
        (
            {"related": {"customer": {"table": "public.nope", "column": "customer_id"}}},
            "trigger.related.customer.table",
            "No table public.nope",
        ),
        (
            {"related": {"customer": {"table": "public.customers", "column": "buyer_id"}}},
            "trigger.related.customer.column",
            "No column 'buyer_id' in public.orders",
        ),
        (
            {"related": {"customer": {"table": "public.customers", "column": "customer_id", "key": "uid"}}},
            "trigger.related.customer.key",
            "No column 'uid' in public.customers",
        ),
        (
            {"related": RELATED, "recipient": {"email": "customer.mail"}},
            "trigger.recipient.email",
            "No column 'mail' in public.customers. Did you mean 'email'?",
        ),
        (
            {"related": {"customer": {"table": "public.customers", "column": "custmer_id"}}},
            "trigger.related.customer.column",
            "No column 'custmer_id' in public.orders. Did you mean 'customer_id'?",
        ),
        ({"recipient": {"email": "buyer.email"}}, "trigger.recipient.email", "'buyer' is neither row nor"),
        ({"recipient": {"email": "row.email"}}, "trigger.recipient.email", "No column 'email' in public.orders"),
        (
            {"related": {"row": {"table": "public.customers", "column": "customer_id"}}},
            "trigger.related.row",
            "other than",
        ),
        (
            {"recipient": {"id": "row.customer_id"}, "for_each": "statement"},
            "trigger.for_each",
            "need one run per row",
        ),
        ({"recipient": {"email": "customer"}}, "trigger.recipient.email", "row.<column>"),
        (
            {"related": {"customer": {"table": "public.customers", "column": "customer_id", "key": "email"}}},
            "trigger.related.customer.key",
            "'email' is not unique in public.customers",
        ),
        ({"related": RELATED, "for_each": "statement"}, "trigger.for_each", "need one run per row"),
        (
            {"recipient": {"id": "row.customer_id"}, "events": ["row.updated", "row.deleted"]},
            "trigger.events",
            "A deleted row cannot be read",
        ),
        (
            {"related": {"h": {"table": "public.hidden", "column": "customer_id"}}},
            "trigger.related.h.table",
            'may not read public.hidden: run GRANT SELECT ON TABLE "public"."hidden" TO',
        ),
    ],
)
def test_links_are_checked_against_the_customer_s_tables_at_save(product_client, connection, trigger, field, says):
    steps = [{**EMAIL, "subject": "s", "body": "b"}]
    response = _create(product_client, connection, steps=steps, **trigger)
    assert response.status_code == 400, response.json()
    fields = _fields(response)
    assert says in fields.get(field, ""), fields


def test_a_template_may_name_a_related_row_only_when_the_trigger_reads_it(product_client, connection):
    response = _create(product_client, connection)
    assert response.status_code == 400
    assert "Unknown variable 'customer'" in _fields(response)["steps[0].subject"]


def test_connection_grants_prints_select_only_for_related_tables():
    from io import StringIO

    from django.core.management import call_command

    out = StringIO()
    call_command(
        "connection_grants",
        "--user",
        "rowbell",
        "--tables",
        "public.orders",
        "--read",
        "public.customers,public.orders",
        stdout=out,
    )
    lines = out.getvalue().splitlines()
    assert 'GRANT SELECT, TRIGGER ON TABLE "public"."orders" TO "rowbell";' in lines
    assert 'GRANT SELECT ON TABLE "public"."customers" TO "rowbell";' in lines  # watched tables stay watched


def test_the_connection_s_health_says_when_a_related_table_can_no_longer_be_read(product_client, connection):
    from apps.connections.services import connection_drift

    from .conftest import CAPTURE_ROLE, CUSTOMER_DB, admin_connect, customer_db_reset

    assert _create(product_client, connection, related=RELATED, recipient=RECIPIENT).status_code == 201
    assert product_client.post("/api/v1/workflows/order-paid/publish").status_code == 201
    assert connection_drift(connection=connection) == []
    with admin_connect(CUSTOMER_DB) as admin:
        admin.execute(f"REVOKE SELECT ON public.customers FROM {CAPTURE_ROLE}")
    try:
        [problem] = connection_drift(connection=connection)
        assert (problem["kind"], problem["table"], problem["workflows"]) == (
            "missing_grant",
            "public.customers",
            ["order-paid"],
        )
        assert f'GRANT SELECT ON TABLE "public"."customers" TO "{CAPTURE_ROLE}"' in problem["detail"]
    finally:
        with admin_connect(CUSTOMER_DB) as admin:
            admin.execute(f"GRANT SELECT ON public.customers TO {CAPTURE_ROLE}")
        customer_db_reset()


def test_a_related_table_that_cannot_be_read_retries_the_run_and_never_skips_the_email(product_client, connection):
    from .conftest import CAPTURE_ROLE, CUSTOMER_DB, admin_connect, customer_db_reset

    assert _create(product_client, connection, related=RELATED, recipient=RECIPIENT).status_code == 201
    assert product_client.post("/api/v1/workflows/order-paid/publish").status_code == 201
    _customers_with_orders()
    poll(connection_id=connection.id)
    with admin_connect(CUSTOMER_DB) as admin:
        admin.execute(f"REVOKE SELECT ON public.customers FROM {CAPTURE_ROLE}")
    try:
        with writer_connect() as app:
            app.execute("UPDATE public.orders SET paid = true WHERE id = 2")
        poll(connection_id=connection.id)
        runs_execute(run_ids=list(Run.objects.filter(status=RunStatus.QUEUED).values_list("id", flat=True)))
        run = Run.objects.get()
        assert run.status == RunStatus.WAITING  # a retry, not a completed run with a skipped email
        retry = AuditEvent.objects.get(action="run.retry_scheduled", target_id=str(run.id))
        assert "GRANT SELECT" in retry.data["error"], retry.data
        assert "will be tried again (attempt 2 of" in run.error and "GRANT SELECT" in run.error  # shown meanwhile
        assert not Delivery.objects.exists()  # nothing skipped: the run waits to read the customer again
    finally:
        with admin_connect(CUSTOMER_DB) as admin:
            admin.execute(f"GRANT SELECT ON public.customers TO {CAPTURE_ROLE}")
    from django.utils import timezone

    from apps.runs.engine import runs_resume_due

    Run.objects.filter(id=run.id).update(resume_at=timezone.now())
    runs_resume_due()
    runs_execute(run_ids=[run.id])
    run.refresh_from_db()
    assert run.status == RunStatus.COMPLETED, run.error
    assert run.error == ""  # the retry's reason is over
    assert [(d.target, d.status) for d in Delivery.objects.all()] == [("bob@example.com", "sent")]
    customer_db_reset()


def test_a_column_a_recipient_reads_renamed_by_a_migration_fails_the_run_and_shows_as_drift(product_client, connection):
    from apps.connections.services import connection_drift
    from apps.runs.models import Escalation

    from .conftest import CUSTOMER_DB, admin_connect, customer_db_reset

    assert _create(product_client, connection, related=RELATED, recipient=RECIPIENT).status_code == 201
    assert product_client.post("/api/v1/workflows/order-paid/publish").status_code == 201
    _customers_with_orders()
    poll(connection_id=connection.id)
    with admin_connect(CUSTOMER_DB) as admin:
        admin.execute("ALTER TABLE public.customers RENAME COLUMN email TO email_address")
    try:
        [problem] = connection_drift(connection=connection)
        assert (problem["kind"], problem["table"], problem["workflows"]) == (
            "missing_column",
            "public.customers",
            ["order-paid"],
        )
        assert "no column 'email'" in problem["detail"] and "Did you mean 'email_address'?" in problem["detail"]
        with writer_connect() as app:
            app.execute("UPDATE public.orders SET paid = true WHERE id = 2")
        poll(connection_id=connection.id)
        runs_execute(run_ids=list(Run.objects.filter(status=RunStatus.QUEUED).values_list("id", flat=True)))
        run = Run.objects.get()
        assert run.status == RunStatus.FAILED  # not a completed run with a skipped email
        assert "Column 'email' is no longer in public.customers (trigger.recipient.email reads customer.email)" in (
            run.error
        )
        assert Escalation.objects.filter(run=run).exists() and not Delivery.objects.exists()
    finally:
        with admin_connect(CUSTOMER_DB) as admin:
            admin.execute("ALTER TABLE public.customers RENAME COLUMN email_address TO email")
        customer_db_reset()


def test_a_reference_to_a_row_that_does_not_exist_fails_the_run_where_a_null_one_skips(product_client, connection):
    from .conftest import CUSTOMER_DB, admin_connect, customer_db_reset

    assert _create(product_client, connection, related=RELATED, recipient=RECIPIENT).status_code == 201
    assert product_client.post("/api/v1/workflows/order-paid/publish").status_code == 201
    _customers_with_orders()
    poll(connection_id=connection.id)
    with admin_connect(CUSTOMER_DB) as admin:
        admin.execute("ALTER TABLE public.orders DROP CONSTRAINT IF EXISTS orders_customer_id_fkey")
    try:
        with writer_connect() as app:
            app.execute("UPDATE public.orders SET customer_id = 777 WHERE id = 1")
            app.execute("UPDATE public.orders SET paid = true WHERE id IN (1, 5)")
        poll(connection_id=connection.id)
        for _ in range(2):
            runs_execute(run_ids=list(Run.objects.filter(status=RunStatus.QUEUED).values_list("id", flat=True)))
        runs = {
            run.state["rows"][0]["id"]: run for run in Run.objects.filter(state__has_key="rows") if run.state["rows"]
        }
        dangling = runs[1]
        assert dangling.status == RunStatus.FAILED
        assert "customer_id = 777 names no row of public.customers (trigger.related.customer)" in dangling.error
        assert runs[5].status == RunStatus.COMPLETED  # order 5's null customer_id: the meant skip
        assert list(Delivery.objects.values_list("status", flat=True)) == ["skipped"]
        # A preview on the row says the same, and names no provider for a message that would not be sent.
        preview = product_client.post("/api/v1/workflows/order-paid/preview", {"row_key": 1}, format="json").json()
        assert "names no row of public.customers" in preview["error"] and "provider" not in preview["steps"][0]
    finally:
        customer_db_reset()
        with admin_connect(CUSTOMER_DB) as admin:
            admin.execute(
                "ALTER TABLE public.orders ADD CONSTRAINT orders_customer_id_fkey FOREIGN KEY (customer_id) "
                "REFERENCES public.customers(id)"
            )


def test_a_reference_column_of_another_type_than_the_key_is_refused_at_save(product_client, connection):
    response = _create(
        product_client,
        connection,
        related={"customer": {"table": "public.customers", "column": "org_id"}},
        recipient=RECIPIENT,
    )
    assert response.status_code == 400, response.json()
    reason = _fields(response)["trigger.related.customer.column"]
    assert "'org_id' is text but public.customers.id is bigint" in reason, reason
