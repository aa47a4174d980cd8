"""The `listener` and `dispatcher` processes keep working while Redis is unreachable, and once it is back
the reconciler (beat and a worker) sends the hints that were lost: every run completes.

"Unreachable" is a port nothing listens on, given to those two processes only: the test Redis, which the
worker and beat use, is never stopped."""

import json
import re

import pytest

from tests.conftest import free_port, wait_until

from .conftest import customer_db_reset, writer_connect

pytestmark = pytest.mark.e2e


def _alive(processes, name):
    return processes.procs[name].poll() is None


def _log(processes, name):
    return processes.logs[name].read_text(errors="replace")


def test_listener_and_dispatcher_go_on_without_the_broker_and_the_work_completes_once_it_is_back(
    processes, receiver, customer_db, product_with_key, settings
):
    from apps.connections.models import Event
    from apps.runs.models import Run, RunStatus, TriggerRequest
    from tests.conftest import client_for

    client = client_for(product_with_key[1])
    try:
        connection = client.post("/api/v1/connections", {"name": "shop", **customer_db}, format="json").json()
        hook = client.post("/api/v1/webhooks", {"url": receiver.url()}, format="json").json()
        step = {"id": "hook", "type": "notify", "channel": "webhook", "webhook": hook["id"]}
        assert (
            client.post(
                "/api/v1/workflows",
                {
                    "key": "order-created",
                    "steps": [step],
                    "trigger": {
                        "type": "database",
                        "connection": connection["id"],
                        "table": "public.orders",
                        "events": ["row.created"],
                    },
                },
                format="json",
            ).status_code
            == 201
        )
        assert (
            client.post(
                "/api/v1/workflows", {"key": "api", "trigger": {"type": "api"}, "steps": [step]}, format="json"
            ).status_code
            == 201
        )
        for key in ("order-created", "api"):
            assert client.post(f"/api/v1/workflows/{key}/publish").status_code == 201

        # The broker is unreachable for the listener and the dispatcher.
        reachable = processes.env
        closed = f"redis://127.0.0.1:{free_port()}"
        processes.env = {**reachable, "TEST_REDIS_URL": f"{closed}/15", "REDIS_URL": f"{closed}/0"}
        processes.listener()
        processes.dispatcher()
        processes.env = reachable

        with writer_connect() as app:
            app.execute("INSERT INTO public.orders (status) VALUES ('first')")
        assert wait_until(lambda: Run.objects.filter(event__isnull=False).count() == 1, timeout=30), _log(
            processes, "listener"
        )[-3000:]
        # Its hint failed after commit: the listener goes on and records what comes next.
        with writer_connect() as app:
            app.execute("INSERT INTO public.orders (status) VALUES ('second')")
            app.execute("INSERT INTO public.orders (status) VALUES ('third')")
        assert wait_until(lambda: Run.objects.filter(event__isnull=False).count() == 3, timeout=30), _log(
            processes, "listener"
        )[-3000:]
        assert Event.objects.count() == 3

        requests = [
            client.post("/api/v1/trigger", {"workflow": "api", "to": [{"id": f"u{i}"}]}, format="json").json()[
                "request_id"
            ]
            for i in range(2)
        ]
        assert wait_until(
            lambda: TriggerRequest.objects.filter(id__in=requests, enqueued_at__isnull=False).count() == 2, timeout=30
        ), _log(processes, "dispatcher")[-3000:]

        assert _alive(processes, "listener"), _log(processes, "listener")[-3000:]
        assert _alive(processes, "dispatcher"), _log(processes, "dispatcher")[-3000:]
        # A hint is sent after its transaction commits, and fails only once the broker's address refuses it:
        # its warning is written a moment after the rows show the work committed.
        run_ids = list(Run.objects.filter(event__isnull=False).values_list("id", flat=True))
        wait_until(
            lambda: (
                all(r in _log(processes, "dispatcher") for r in requests)
                and all(str(i) in _log(processes, "listener") for i in run_ids)
            ),
            timeout=15,
        )
        listener_log, dispatcher_log = _log(processes, "listener"), _log(processes, "dispatcher")
        assert "Traceback" not in listener_log and "Traceback" not in dispatcher_log, listener_log + dispatcher_log
        warned = [
            int(i)
            for ids in re.findall(r"apps\.runs\.tasks\.runs_execute to normal, ids \[([\d, ]+)\]", listener_log)
            for i in ids.split(", ")
        ]
        assert sorted(warned) == sorted(run_ids), listener_log  # each lost hint named once
        assert all(r in dispatcher_log for r in requests) and "apps.runs.tasks.requests_start" in dispatcher_log
        assert Run.objects.filter(status=RunStatus.QUEUED).count() == 3 and not receiver.requests

        # The broker is back (for the worker and beat): the reconcile tick re-sends every lost hint.
        processes.env = {**reachable, "ROWBELL_REQUEUE_AFTER_SECONDS": "1"}
        settings.ROWBELL_RECONCILE_INTERVAL = 1.0
        processes.worker()
        processes.beat()
        assert receiver.wait_for(5, timeout=60), _log(processes, "worker")[-3000:] + _log(processes, "beat")[-2000:]
        assert wait_until(lambda: Run.objects.filter(status=RunStatus.COMPLETED).count() == 5, timeout=30), list(
            Run.objects.values_list("id", "status", "waiting_on", "error")
        )
        bodies = [json.loads(r["body"]) for r in receiver.requests]
        assert sorted(b["data"]["workflow"] for b in bodies) == ["api", "api"] + ["order-created"] * 3
        assert _alive(processes, "listener") and _alive(processes, "dispatcher")
    finally:
        processes.stop_all()
        customer_db_reset()
