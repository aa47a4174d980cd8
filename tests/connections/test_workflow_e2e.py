"""A row change runs a workflow end to end through real worker and beat processes: a wait, a branch, a
signed webhook and an email; a worker killed with SIGKILL during the wait changes nothing."""

import time

import pytest
from standardwebhooks.webhooks import Webhook

from tests.conftest import wait_until

from .conftest import customer_db_reset, writer_connect

pytestmark = pytest.mark.e2e


def test_a_row_change_runs_wait_branch_webhook_and_email_exactly_once_across_a_killed_worker(
    processes, receiver, smtp_sink, customer_db, product_with_key
):
    from apps.deliveries.models import Delivery
    from apps.runs.models import Run, RunStatus, RunStep
    from tests.conftest import client_for

    processes.env["TEST_EMAIL_PORT"] = str(smtp_sink.port)
    client = client_for(product_with_key[1])
    try:
        connection = client.post("/api/v1/connections", {"name": "shop", **customer_db}, format="json").json()
        hook = client.post("/api/v1/webhooks", {"url": receiver.url()}, format="json").json()
        response = client.post(
            "/api/v1/workflows",
            {
                "key": "big-order",
                "trigger": {
                    "type": "database",
                    "connection": connection["id"],
                    "table": "public.orders",
                    "events": ["row.created"],
                },
                "steps": [
                    {"id": "pause", "type": "wait", "duration": "3s"},
                    {
                        "id": "route",
                        "type": "branch",
                        "branches": [
                            {
                                "when": {"column": "row.total", "op": "gte", "value": 100},
                                "steps": [
                                    {"id": "hook", "type": "notify", "channel": "webhook", "webhook": hook["id"]}
                                ],
                            }
                        ],
                    },
                    {
                        "id": "mail",
                        "type": "notify",
                        "channel": "email",
                        "to": "sales@example.com",
                        "subject": "Order {{ row.id }}: {{ '%.2f' | format(row.total) }}",
                        "body": "Status {{ row.status }}",
                    },
                ],
            },
            format="json",
        )
        assert response.status_code == 201, response.json()
        assert client.post("/api/v1/workflows/big-order/publish").status_code == 201
        processes.worker()
        processes.beat()

        with writer_connect() as app:
            app.execute("INSERT INTO public.orders (status, total) VALUES ('new', 150)")  # order 1: big
        assert receiver.wait_for(1, timeout=60), processes.logs["worker"].read_text()[-3000:]
        body = Webhook(hook["secret"]).verify(receiver.requests[0]["body"], receiver.requests[0]["headers"])
        assert body["data"]["event"]["ids"] == [1]
        assert smtp_sink.wait_for(1)
        assert "Subject: Order 1: 150.00" in smtp_sink.messages[0]["data"]

        with writer_connect() as app:
            app.execute("INSERT INTO public.orders (status, total) VALUES ('new', 20)")  # order 2: small
            app.execute("INSERT INTO public.orders (status, total) VALUES ('new', 500)")  # order 3: big

        def waiting():
            runs = list(Run.objects.filter(event__ids__in=[[2], [3]]).values_list("status", "waiting_on"))
            return len(runs) == 2 and all(r == (RunStatus.WAITING, "time") for r in runs)

        assert wait_until(waiting, timeout=60), processes.logs["worker"].read_text()[-3000:]
        processes.kill("worker")  # SIGKILL during the wait
        processes.worker()

        assert smtp_sink.wait_for(3, timeout=60), processes.logs["worker"].read_text()[-3000:]
        assert receiver.wait_for(2, timeout=30)

        def settled():
            return Run.objects.filter(status=RunStatus.COMPLETED).count() == 3

        assert wait_until(settled, timeout=60), list(Run.objects.values_list("id", "status", "waiting_on", "error"))
        time.sleep(2)  # anything sent twice would have arrived by now
        hooks = sorted(
            Webhook(hook["secret"]).verify(r["body"], r["headers"])["data"]["event"]["ids"][0]
            for r in receiver.requests
        )
        assert hooks == [1, 3]  # the branch: big orders only, each once
        subjects = sorted(
            line for m in smtp_sink.messages for line in m["data"].splitlines() if line.startswith("Subject:")
        )
        assert subjects == ["Subject: Order 1: 150.00", "Subject: Order 2: 20.00", "Subject: Order 3: 500.00"]
        assert Run.objects.count() == 3 and Delivery.objects.count() == 5
        assert RunStep.objects.filter(step_id="pause").count() == 3
    finally:
        customer_db_reset()


def test_one_update_marks_five_orders_paid_and_each_customer_gets_their_email_through_their_organization(
    processes, customer_db, product_with_key
):
    """The job Rowbell exists for, with real processes: one statement pays five orders of two organizations;
    each order's customer gets their own email, through the SMTP server of the organization that owns it."""
    from apps.deliveries.models import Delivery
    from apps.runs.models import Run, RunStatus
    from apps.tenants.services import organization_create
    from tests.conftest import SMTPSink, client_for

    product, key = product_with_key
    client = client_for(key)
    sinks = {"acme": SMTPSink(), "globex": SMTPSink()}
    try:
        for name, sink in sinks.items():
            organization, _ = organization_create(product=product, name=name.title(), external_id=name, actor="test")
            configured = client.put(
                "/api/v1/providers/email",
                {
                    "organization": str(organization.id),
                    "provider": "smtp",
                    "credentials": {},
                    "options": {
                        "host": "127.0.0.1",
                        "port": sink.port,
                        "security": "none",
                        "from_email": f"orders@{name}.example",
                    },
                },
                format="json",
            )
            assert configured.status_code == 200, configured.json()
        connection = client.post("/api/v1/connections", {"name": "shop", **customer_db}, format="json").json()
        response = client.post(
            "/api/v1/workflows",
            {
                "key": "order-paid",
                "trigger": {
                    "type": "database",
                    "connection": connection["id"],
                    "table": "public.orders",
                    "events": ["row.updated"],
                    "columns": ["paid"],
                    "related": {"customer": {"table": "public.customers", "column": "customer_id"}},
                    "recipient": {"id": "customer.id", "email": "customer.email", "name": "customer.name"},
                    "organization": "row.org_id",
                },
                "steps": [
                    {
                        "type": "notify",
                        "channel": "email",
                        "to": "{{ recipient.email }}",
                        "subject": "Order {{ row.id }} is paid",
                        "body": "Thank you, {{ customer.name }}: {{ '%.2f' | format(row.total) }} received.",
                    }
                ],
            },
            format="json",
        )
        assert response.status_code == 201, response.json()
        assert client.post("/api/v1/workflows/order-paid/publish").status_code == 201
        with writer_connect() as app:
            app.execute(
                "INSERT INTO public.customers (email, name) VALUES ('ann@example.com', 'Ann'), "
                "('bob@example.com', 'Bob'), ('cy@example.com', 'Cy'), ('di@example.com', 'Di'), "
                "('ed@example.com', 'Ed')"
            )
            app.execute(
                "INSERT INTO public.orders (customer_id, total, org_id) VALUES (1, 10, 'acme'), (2, 20, 'acme'), "
                "(3, 30, 'acme'), (4, 40, 'globex'), (5, 50, 'globex')"
            )
        processes.worker()
        processes.beat()

        with writer_connect() as app:
            app.execute("UPDATE public.orders SET paid = true WHERE NOT paid")  # one statement, five rows

        for sink, count in ((sinks["acme"], 3), (sinks["globex"], 2)):
            assert sink.wait_for(count, timeout=60), processes.logs["worker"].read_text()[-3000:]
        assert wait_until(lambda: Run.objects.filter(status=RunStatus.COMPLETED).count() == 5, timeout=30)
        time.sleep(1)  # anything sent twice would have arrived by now

        def received(sink):
            return sorted(
                (m["from"], m["to"][0], next(line for line in m["data"].splitlines() if line.startswith("Subject:")))
                for m in sink.messages
            )

        assert received(sinks["acme"]) == [
            ("orders@acme.example", "ann@example.com", "Subject: Order 1 is paid"),
            ("orders@acme.example", "bob@example.com", "Subject: Order 2 is paid"),
            ("orders@acme.example", "cy@example.com", "Subject: Order 3 is paid"),
        ]
        assert received(sinks["globex"]) == [
            ("orders@globex.example", "di@example.com", "Subject: Order 4 is paid"),
            ("orders@globex.example", "ed@example.com", "Subject: Order 5 is paid"),
        ]
        assert Delivery.objects.filter(status="sent").count() == 5 and Run.objects.count() == 5
    finally:
        for sink in sinks.values():
            sink.close()
        customer_db_reset()
