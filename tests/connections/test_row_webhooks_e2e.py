"""A row written by the customer's application reaches a receiver through real worker, beat and listener processes."""

import json
import time

import pytest
from standardwebhooks.webhooks import Webhook

from .conftest import customer_db_reset, writer_connect

pytestmark = pytest.mark.e2e


@pytest.fixture
def subscribed(processes, receiver, customer_db, product_with_key):
    """A connection to the customer database and a row.created subscription on public.orders."""
    from tests.conftest import client_for

    client = client_for(product_with_key[1])
    connection = client.post("/api/v1/connections", {"name": "shop", **customer_db}, format="json").json()
    hook = client.post(
        "/api/v1/webhooks",
        {
            "url": receiver.url(),
            "source": {"connection": connection["id"], "table": "public.orders", "events": ["row.created"]},
        },
        format="json",
    ).json()
    yield {"connection": connection, "hook": hook}
    customer_db_reset()


def _insert(*statuses):
    with writer_connect() as app:
        for status in statuses:
            app.execute("INSERT INTO public.orders (status) VALUES (%s)", [status])


def test_an_inserted_row_is_delivered_by_the_running_services(processes, receiver, subscribed):
    processes.worker()
    processes.beat()
    _insert("new")
    assert receiver.wait_for(1, timeout=30), processes.logs["beat"].read_text()[-2000:]
    hook = subscribed["hook"]
    body = Webhook(hook["secret"]).verify(receiver.requests[0]["body"], receiver.requests[0]["headers"])
    assert body["type"] == "row.created" and body["ids"] == [1] and body["webhook_id"] == hook["id"]


def test_the_listener_alone_picks_changes_up_without_the_beat_poller(processes, receiver, subscribed):
    processes.worker()
    processes.listener()  # no beat: only the listener reads the log
    _insert("a", "b", "c")
    assert receiver.wait_for(3, timeout=30), processes.logs["listener"].read_text()[-2000:]
    assert sorted(json.loads(r["body"])["ids"][0] for r in receiver.requests) == [1, 2, 3]


@pytest.mark.parametrize("processes", [{"ROWBELL_CAPTURE_NOTIFY": "true"}], indirect=True)
def test_with_notify_the_listener_is_woken_by_the_trigger(processes, receiver, customer_db, product_with_key, settings):
    from apps.connections.capture import NOTIFY_CHANNEL
    from apps.connections.customer import customer_connect
    from apps.connections.models import Connection
    from tests.conftest import client_for

    settings.ROWBELL_CAPTURE_NOTIFY = True  # the API process installs the triggers: NOTIFY them too
    client = client_for(product_with_key[1])
    try:
        connection = client.post("/api/v1/connections", {"name": "shop", **customer_db}, format="json").json()
        client.post(
            "/api/v1/webhooks",
            {
                "url": receiver.url(),
                "source": {"connection": connection["id"], "table": "public.orders", "events": ["row.created"]},
            },
            format="json",
        )
        with customer_connect(Connection.objects.get(id=connection["id"])) as conn:
            body = conn.execute("SELECT prosrc FROM pg_proc WHERE proname LIKE 'rb\\_%%\\_insert'").fetchone()[0]
        assert f"pg_notify('{NOTIFY_CHANNEL}'" in body
        processes.worker()
        processes.listener()
        _insert("a")
        assert receiver.wait_for(1, timeout=30), processes.logs["listener"].read_text()[-2000:]
    finally:
        customer_db_reset()


def test_changes_made_while_rowbell_was_stopped_are_all_delivered_once(processes, receiver, subscribed):
    _insert(*[f"r{i}" for i in range(1000)])  # nothing of Rowbell runs: no worker, no beat, no listener
    processes.worker()
    processes.beat()
    assert receiver.wait_for(1000, timeout=120), processes.logs["worker"].read_text()[-2000:]
    ids = sorted(json.loads(r["body"])["ids"][0] for r in receiver.requests)
    assert ids == list(range(1, 1001))  # every row once


def test_a_database_workflow_runs_once_per_change_made_while_rowbell_was_stopped(
    processes, receiver, customer_db, product_with_key
):
    from apps.runs.models import Run, RunStatus
    from tests.conftest import client_for

    client = client_for(product_with_key[1])
    try:
        connection = client.post("/api/v1/connections", {"name": "shop", **customer_db}, format="json").json()
        hook = client.post("/api/v1/webhooks", {"url": receiver.url()}, format="json").json()
        client.post(
            "/api/v1/workflows",
            {
                "key": "order-created",
                "trigger": {
                    "type": "database",
                    "connection": connection["id"],
                    "table": "public.orders",
                    "events": ["row.created"],
                },
                "steps": [{"type": "notify", "channel": "webhook", "webhook": hook["id"]}],
            },
            format="json",
        )
        assert client.post("/api/v1/workflows/order-created/publish").status_code == 201
        _insert(*[f"r{i}" for i in range(1000)])  # one event per statement; nothing of Rowbell runs
        processes.worker()
        processes.beat()
        assert receiver.wait_for(1000, timeout=120), processes.logs["worker"].read_text()[-2000:]
        bodies = [Webhook(hook["secret"]).verify(r["body"], r["headers"]) for r in receiver.requests]
        assert sorted(b["data"]["event"]["ids"][0] for b in bodies) == list(range(1, 1001))  # every row once
        # The receiver answers before the worker records the outcome: give the last batch a moment.
        deadline = time.monotonic() + 30
        while Run.objects.filter(status=RunStatus.COMPLETED).count() < 1000 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert Run.objects.filter(status=RunStatus.COMPLETED).count() == Run.objects.count() == 1000
    finally:
        customer_db_reset()
