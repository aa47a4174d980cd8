"""The first `make run`: the banner printed once every process answers (apps/core/readiness.py, `demo_banner`),
and the demo's email on the sink's page (`seed_demo` points the demo product's SMTP provider at the sink)."""

import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from io import StringIO
from pathlib import Path

import psycopg
import pytest
from django.core.management import call_command
from django.db import connection

from apps.core.readiness import (
    beat_ticks,
    checks_wait,
    database_session,
    http_answers,
    smtp_answers,
    worker_answers,
)
from apps.core.schedules import periodic_tasks
from apps.dashboard.management.commands import seed_demo
from apps.deliveries.models import Delivery, DeliveryStatus, ProviderConfig
from apps.deliveries.services import deliveries_release, deliveries_send
from apps.runs.models import TriggerRequest
from apps.runs.services import request_start, runs_execute
from config.celery_app import app
from tests.conftest import free_port

# --- Waiting for every process ------------------------------------------------------------------


def test_the_wait_ends_once_every_check_has_passed_and_asks_a_passed_check_no_more():
    calls = {"web": 0, "worker": 0}

    def web():
        calls["web"] += 1
        return None

    def worker():
        calls["worker"] += 1
        return None if calls["worker"] >= 3 else "no worker answers a ping"

    assert checks_wait({"web": web, "worker": worker}, timeout=10, interval=0.01) == {}
    assert calls == {"web": 1, "worker": 3}


def test_past_the_timeout_the_wait_names_each_process_not_ready_with_its_latest_reason():
    def broken():
        raise RuntimeError("the broker refused")

    started = time.monotonic()
    missing = checks_wait(
        {"web": lambda: None, "beat": lambda: "no tick of beat has reached a worker yet", "worker": broken},
        timeout=0.2,
        interval=0.01,
    )
    assert missing == {"beat": "no tick of beat has reached a worker yet", "worker": "RuntimeError: the broker refused"}
    assert time.monotonic() - started < 2


def test_a_stop_ends_the_wait_at_once():
    stop = threading.Event()
    threading.Timer(0.1, stop.set).start()
    started = time.monotonic()
    assert checks_wait({"web": lambda: "not yet"}, timeout=30, interval=5, stop=stop) == {"web": "not yet"}
    assert time.monotonic() - started < 2


@pytest.mark.django_db(transaction=True)
def test_the_sink_is_ready_when_it_answers_http_and_smtp(demo_sink):
    port, smtp_port = demo_sink
    assert http_answers(f"http://127.0.0.1:{port}/messages.json")() is None
    assert smtp_answers("127.0.0.1", smtp_port)() is None
    closed = free_port()
    assert "does not answer" in http_answers(f"http://127.0.0.1:{closed}/")()
    assert f"no SMTP server answers on 127.0.0.1:{closed}" in smtp_answers("127.0.0.1", closed)()


@pytest.mark.django_db(transaction=True)
def test_a_loop_is_ready_once_its_database_session_carries_its_name():
    check = database_session("rowbell-readiness-test")
    assert check() == "no database session named rowbell-readiness-test"
    cfg = connection.settings_dict
    with psycopg.connect(
        host=cfg["HOST"] or "127.0.0.1",
        port=cfg["PORT"] or 5432,
        user=cfg["USER"],
        password=cfg["PASSWORD"] or None,
        dbname=cfg["NAME"],
        application_name="rowbell-readiness-test",
    ):
        assert check() is None


@pytest.mark.e2e
def test_the_worker_is_ready_when_it_answers_a_ping_and_beat_when_its_ticks_reach_the_worker(processes):
    ticks = [spec["task"] for spec in periodic_tasks().values()]
    assert checks_wait({"worker": worker_answers(app), "beat": beat_ticks(app, ticks)}, timeout=0.5) == {
        "worker": "no worker answers a ping",
        "beat": "no worker answers, so no tick of beat can be seen",
    }
    processes.worker()
    beat = beat_ticks(app, ticks)
    assert checks_wait({"worker": worker_answers(app), "beat": beat}, timeout=3) == {
        "beat": "no tick of beat has reached a worker yet"
    }
    processes.beat()
    assert checks_wait({"beat": beat}, timeout=30) == {}


# --- The banner ---------------------------------------------------------------------------------


def test_the_banner_says_where_to_look_and_how_to_see_every_log_line():
    text = seed_demo.banner(port=8640, headline="Rowbell is ready.", verbose=False)
    assert "Rowbell is ready." in text
    for shown in (
        "http://127.0.0.1:8640/admin/",
        "http://127.0.0.1:8640/admin/review/",
        "http://127.0.0.1:8640/api/docs/",
        "http://127.0.0.1:8001/",
        "SMTP on 127.0.0.1:8025",
        ".run/demo.env",
        "make run VERBOSE=1",
    ):
        assert shown in text
    assert "VERBOSE=1" not in seed_demo.banner(port=8000)  # run by hand: no word on make run's logs


@pytest.mark.django_db(transaction=True)
def test_the_banner_process_names_what_is_not_ready_then_prints_the_banner():
    out = StringIO()
    ports = [str(free_port()) for _ in range(3)]
    call_command(
        "demo_banner",
        *("--port", ports[0], "--sink-port", ports[1], "--smtp-port", ports[2]),
        *("--timeout", "0.5", "--exit"),
        stdout=out,
    )
    text = out.getvalue()
    assert "Not ready after 0.5 s:" in text
    for process in ("web", "worker", "beat", "dispatcher", "listener", "sink", "sink (SMTP)"):
        assert f"    {process}: " in text
    assert "no database session named rowbell-dispatcher" in text
    assert text.index("Not ready") < text.index(f"Admin:        http://127.0.0.1:{ports[0]}/admin/")


# --- The demo's email on the sink ---------------------------------------------------------------


@pytest.mark.django_db
def test_the_demo_s_email_provider_sends_to_the_sink_where_it_shows(demo_sink, tmp_path, monkeypatch):
    port, smtp_port = demo_sink
    monkeypatch.setattr(seed_demo, "KEYS_FILE", tmp_path / "demo.env")
    call_command("seed_demo", "--sink-port", str(port), "--smtp-port", str(smtp_port), "--no-banner", stdout=StringIO())

    config = ProviderConfig.objects.get(channel="email", organization=None)
    assert (config.provider, config.options["host"], config.options["port"]) == ("smtp", "127.0.0.1", smtp_port)
    first_order = TriggerRequest.objects.get(workflow_version__workflow__key="order-shipped")
    assert first_order.data == {"order_id": "A-1000"}

    # The sandboxed welcome email, held for review, then released as a reviewer would.
    welcome = TriggerRequest.objects.get(workflow_version__workflow__key="welcome")
    runs_execute(run_ids=request_start(request_id=welcome.id))
    held = Delivery.objects.get(request=welcome, status=DeliveryStatus.HELD)
    assert deliveries_release(product_id=held.product_id, message_ids=[held.message_id], actor="test")
    deliveries_send(delivery_ids=[held.id])
    held.refresh_from_db()
    assert held.status == DeliveryStatus.SENT

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/messages.json", timeout=5) as response:
        [email] = json.load(response)
    assert email["subject"] == "Welcome to Demo Shop, Ann" and email["to"] == "ann@example.com"
    assert email["from"] == seed_demo.DEMO_SENDER and email["message_id"] == held.message_id
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as response:
        assert "Welcome to Demo Shop, Ann" in response.read().decode()


def test_make_run_stops_before_starting_when_a_port_it_listens_on_is_taken():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "apps.core.preflight", "--test", "--listen", f"web={free_port()}"]
            + ["--listen", f"sink-smtp={port}"],
            cwd=Path(__file__).resolve().parent.parent.parent,
            capture_output=True,
            text=True,
            env=os.environ,
        )
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert f"Port {port} (sink-smtp) is in use on 127.0.0.1" in result.stderr


def test_make_run_stops_before_starting_when_two_processes_are_given_one_port():
    # make run PORT=8001: web and the sink would each find 8001 free, then one could not listen.
    port = free_port()
    result = subprocess.run(
        [sys.executable, "-m", "apps.core.preflight", "--test", "--listen", f"web={port}", "--listen", f"sink={port}"],
        cwd=Path(__file__).resolve().parent.parent.parent,
        capture_output=True,
        text=True,
        env=os.environ,
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert f"Port {port} is given to web and sink" in result.stderr


def test_a_proxy_in_the_environment_does_not_answer_for_a_local_process(demo_sink, monkeypatch):
    port, _ = demo_sink
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")  # nothing listens there
    assert http_answers(f"http://127.0.0.1:{port}/messages.json")() is None


def test_a_refused_request_is_one_line_of_the_log():
    # Under DEBUG, Django's own console handler printed each of its lines again beside the root's.
    script = 'import django, logging; django.setup(); logging.getLogger("django.request").warning("Bad Request: /x")'
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=Path(__file__).resolve().parent.parent.parent,
        capture_output=True,
        text=True,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings.local", "DJANGO_DEBUG": "true"},
    )
    assert result.stderr.count("Bad Request: /x") == 1, result.stderr
