import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import redis
from django.conf import settings
from django.core.cache import caches
from rest_framework.test import APIClient

from apps.core.ratelimits import CACHE_ALIAS
from apps.tenants.services import platform_key_create

from . import factories

ROOT = Path(__file__).resolve().parent.parent


def wait_until(predicate, timeout: float = 30.0, every: float = 0.1) -> bool:
    """Poll `predicate` until it holds or `timeout` seconds pass; return whether it held."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(every)
    return predicate()


@pytest.fixture(autouse=True)
def _fresh_rate_limits():
    """Every test starts with no API calls or failed authentications counted (a Redis database of their own)."""
    caches[CACHE_ALIAS].clear()


# --- API clients ------------------------------------------------------------------------------


def client_for(key: str | None) -> APIClient:
    client = APIClient()
    if key:
        client.credentials(HTTP_AUTHORIZATION=f"Api-Key {key}")
    return client


@pytest.fixture
def platform_key(db):
    _, raw = platform_key_create(name="tests")
    return raw


@pytest.fixture
def product_with_key(db):
    return factories.make_product()


@pytest.fixture
def product(product_with_key):
    return product_with_key[0]


@pytest.fixture
def product_client(product_with_key):
    return client_for(product_with_key[1])


# --- A local HTTP receiver ----------------------------------------------------------------------


class Receiver:
    """Records every request; answers from a script of (status, headers, body), then `default`."""

    def __init__(self):
        self.requests: list[dict] = []
        self.script: deque = deque()
        self.default = (200, {}, b"ok")
        self.delay = 0.0
        self._cond = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if receiver.delay:
                    time.sleep(receiver.delay)
                with receiver._cond:
                    receiver.requests.append(
                        {
                            "path": self.path,
                            "headers": {k.lower(): v for k, v in self.headers.items()},
                            "body": body,
                            "at": time.monotonic(),
                        }
                    )
                    status, headers, payload = receiver.script.popleft() if receiver.script else receiver.default
                    receiver._cond.notify_all()
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path="/hook"):
        return f"http://127.0.0.1:{self.port}{path}"

    def answer(self, *responses):
        """Queue answers: ints (status) or (status, headers, body) tuples."""
        for r in responses:
            self.script.append((r, {}, b"") if isinstance(r, int) else r)

    def wait_for(self, count: int, timeout: float = 20.0) -> bool:
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.requests) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


# --- A local SMTP server ------------------------------------------------------------------------


class SMTPSink:
    def __init__(self):
        from aiosmtpd.controller import Controller

        self.messages = []
        sink = self

        class Handler:
            async def handle_DATA(self, server, session, envelope):
                sink.messages.append(
                    {
                        "from": envelope.mail_from,
                        "to": list(envelope.rcpt_tos),
                        "data": envelope.content.decode("utf-8", errors="replace"),
                    }
                )
                return "250 OK"

        self.port = free_port()
        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port)
        self.controller.start()

    def wait_for(self, count, timeout=20.0):
        deadline = time.monotonic() + timeout
        while len(self.messages) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        return len(self.messages) >= count

    def close(self):
        self.controller.stop()


@pytest.fixture
def smtp_sink():
    s = SMTPSink()
    yield s
    s.close()


@pytest.fixture
def demo_sink():
    """The demo sink of `make run` (apps/deliveries/sink.py), HTTP and SMTP, on free ports: (port, smtp_port)."""
    from apps.deliveries.sink import SinkMessages, sink_http_server, sink_smtp_server

    messages = SinkMessages()
    port, smtp_port = free_port(), free_port()
    server = sink_http_server(messages, port=port, smtp_port=smtp_port)
    smtp = sink_smtp_server(messages, port=smtp_port)
    smtp.start()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield port, smtp_port
    server.shutdown()
    server.server_close()
    smtp.stop()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- Real worker and beat processes -------------------------------------------------------------


@pytest.fixture
def test_redis():
    client = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    client.flushdb()
    yield client
    client.flushdb()


class Processes:
    """Starts real `celery worker` / `celery beat` processes against the test database and Redis."""

    def __init__(self, env_extra: dict):
        from django.db import connection

        self.env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "config.settings.test",
            "DATABASE_URL": _database_url(connection.settings_dict),
            "PYTHONUNBUFFERED": "1",
            **{k: str(v) for k, v in env_extra.items()},
        }
        self.procs: dict[str, subprocess.Popen] = {}
        self.logs: dict[str, Path] = {}

    def start(self, name: str, *args: str):
        log = ROOT / ".pytest_cache" / f"{name}-{os.getpid()}.log"
        log.parent.mkdir(exist_ok=True)
        self.logs[name] = log
        cmd = [sys.executable, "-m", "celery", "-A", "config.celery_app", *args]
        self.procs[name] = subprocess.Popen(
            cmd, cwd=ROOT, env=self.env, stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True
        )
        return self.procs[name]

    def worker(self, name="worker", concurrency=2):
        proc = self.start(
            name,
            "worker",
            "-Q",
            "high,normal,low",
            "-c",
            str(concurrency),
            "-l",
            "info",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            "-n",
            f"{name}@%h",
        )
        self._wait_for_log(name, "ready.")
        return proc

    def _manage(self, name: str, command: str, ready: str):
        log = ROOT / ".pytest_cache" / f"{name}-{os.getpid()}.log"
        log.parent.mkdir(exist_ok=True)
        self.logs[name] = log
        self.procs[name] = subprocess.Popen(
            [sys.executable, "manage.py", command],
            cwd=ROOT,
            env=self.env,
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self._wait_for_log(name, ready)

    def dispatcher(self):
        self._manage("dispatcher", "run_dispatcher", "Dispatcher started.")

    def listener(self):
        self._manage("listener", "run_listener", "Listener started.")

    def beat(self):
        from apps.core.schedules import schedules_sync

        schedules_sync()
        self.start("beat", "beat", "-l", "info")

    def _wait_for_log(self, name, marker, timeout=30):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if marker in self.logs[name].read_text(errors="replace"):
                return
            if self.procs[name].poll() is not None:
                break
            time.sleep(0.1)
        raise RuntimeError(f"{name} did not start:\n{self.logs[name].read_text(errors='replace')[-3000:]}")

    def kill(self, name, sig=signal.SIGKILL):
        proc = self.procs.pop(name)
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        proc.wait(timeout=30)

    def stop_all(self):
        for name in list(self.procs):
            self.kill(name, signal.SIGTERM if name != "beat" else signal.SIGKILL)


def _database_url(cfg) -> str:
    auth = cfg["USER"] + (f":{cfg['PASSWORD']}" if cfg.get("PASSWORD") else "")
    return (
        f"postgres://{auth}@{cfg['HOST'] or '127.0.0.1'}:{cfg['PORT'] or 5432}/{cfg['NAME']}"
        f"?application_name={PROCESS_APPLICATION_NAME}"
    )


# The started processes' database sessions carry this name, so that the fixture ends exactly those.
PROCESS_APPLICATION_NAME = "rowbell-test-process"


@pytest.fixture
def processes(transactional_db, test_redis, request):
    env_extra = getattr(request, "param", {}) or {}
    procs = Processes(env_extra)
    yield procs
    procs.stop_all()
    # Worker connections must be gone before the test database is flushed or dropped.
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() "
            "AND application_name = %s AND pid <> pg_backend_pid()",
            [PROCESS_APPLICATION_NAME],
        )


# --- Hinted tasks, run in this process -----------------------------------------------------------


class HintedTasks:
    """Runs the tasks hinted to Redis (what a worker would do with them), in this process. Hints are sent
    on commit: wrap the code that sends them in `django_capture_on_commit_callbacks(execute=True)`."""

    QUEUES = ("high", "normal", "low")

    def __init__(self, redis_client):
        self.redis = redis_client

    def pending(self) -> list[tuple[str, list]]:
        import base64
        import json

        out = []
        for queue in self.QUEUES:
            for raw in reversed(self.redis.lrange(queue, 0, -1)):
                message = json.loads(raw)
                out.append((message["headers"]["task"], json.loads(base64.b64decode(message["body"]))[0]))
        return out

    def run(self) -> list[str]:
        """Run the hinted tasks; return their names."""
        import importlib

        from config.celery_app import app

        ran = []
        for name, args in self.pending():
            importlib.import_module(name.rsplit(".", 1)[0])
            app.tasks[name](*args)
            ran.append(name)
        for queue in self.QUEUES:
            self.redis.delete(queue)
        return ran


@pytest.fixture
def hinted(test_redis):
    return HintedTasks(test_redis)
