"""Chaos run: no message is lost when processes, Redis, both databases and the receivers fail under load.

    make chaos     (or: .venv/bin/python bench/chaos.py --seed 1 --messages 10000)

1. Private throwaway servers on free ports (bench/chaos_servers.py): a service PostgreSQL and a customer
   PostgreSQL (initdb into a temporary directory, run as the `postgres` OS user, fsync off) and a Redis without
   persistence. The machine's shared PostgreSQL and Redis are never touched.
2. A webhook receiver and an SMTP sink (bench/chaos_sinks.py), one asyncio process, recording every message
   with its webhook-id / X-Rowbell-Message-Id and what they answered; they misbehave on demand.
3. Every Procfile process kind with production settings: web (gunicorn), dispatcher, listener, worker, beat;
   short retry schedules, lease and reconcile interval, so that retries and repairs happen within the run.
   A supervisor restarts any process that exits, as a process manager would.
4. The setup: a product, its customer database connection, a webhook endpoint at the receiver, an SMTP
   provider at the sink (PUT /api/v1/providers/email), and five published workflows:
   - `db-order-created`, `db-order-paid`: database triggers on public.orders (row.created; row.updated of
     `status`), one run per row, one webhook each;
   - `db-signup-email`: database trigger on public.signups (row.created), one run per row, an email to the
     row's address through the SMTP provider;
   - `api-hook`, `api-email`: `POST /api/v1/trigger`, a webhook or an email per recipient.
5. The load (`--messages`, over `--load-seconds`): a writer commits INSERTs (one row, or up to 300 per
   statement) and UPDATEs (one row, or up to 300) to the customer database; three callers make trigger calls
   of 1 to 20 recipients. Every statement and call is repeated until it is known to have taken effect
   (INSERT ... ON CONFLICT DO NOTHING, UPDATE ... WHERE status = 'new', the same Idempotency-Key), so the
   sending side knows exactly which messages are expected; the customer tables are read at the end to confirm.
6. Faults at random moments (seeded by `--seed`) while the load runs and while it drains: SIGKILL of each
   process kind (each at least twice; the process group, restarted after a short pause), Redis restarted
   empty (twice) and FLUSHALL, both PostgreSQL servers stopped with `-m immediate` and started again (twice
   each), the receiver answering 500, timing out and resetting connections, the SMTP sink answering 451.
7. The drain: until every expected message was acknowledged and every delivery and run is final, or
   `--drain-timeout`. Then the checks: every expected message arrived (lost = 0); duplicates carry the id of
   their original; every delivery delivered/sent; each delivery's attempt_count equals its attempt rows; what
   the sinks received per message is at most the attempts recorded for it.
8. The figures and the command go to docs/reliability.md (unless --no-write). Exit status 1 if anything is
   lost, unrecorded, not final or inconsistent.

Logs of every process and server: .bench/chaos/ (kept; the servers' data directories are removed).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.chaos_servers import PrivatePostgres, PrivateRedis, free_port  # noqa: E402
from bench.docs import section_write  # noqa: E402

LOGS = ROOT / ".bench" / "chaos"
DOC = ROOT / "docs" / "reliability.md"
KEY = "yY2m8b0ZQk3vV6Jt9rS1cXHqW4nE7pLaD5uF0gTiB2o="  # a fixed Fernet key, throwaway databases only
KINDS = ("web", "dispatcher", "listener", "worker", "beat")


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# --- Rowbell's processes ----------------------------------------------------------------------------------


class Processes:
    """Rowbell's processes, each in a session of its own (a kill reaches its children), logging to LOGS.
    `supervise()` restarts any that exited unless a fault holds it down; exits not caused by a fault are
    counted as crashes."""

    def __init__(self, env: dict, web_port: int, web_workers: int, worker_concurrency: int):
        self.env = env
        self.web_port = web_port
        bin_dir = Path(sys.executable).parent
        celery = [sys.executable, "-m", "celery", "-A", "config.celery_app"]
        self.commands = {
            "web": [
                str(bin_dir / "gunicorn"),
                "config.wsgi",
                "--bind",
                f"127.0.0.1:{web_port}",
                "--workers",
                str(web_workers),
                "--log-level",
                "warning",
            ],
            "dispatcher": [sys.executable, "manage.py", "run_dispatcher"],
            "listener": [sys.executable, "manage.py", "run_listener"],
            "worker": [
                *celery,
                "worker",
                "-Q",
                "high,normal,low",
                "--concurrency",
                str(worker_concurrency),
                "-l",
                "warning",
            ],
            "beat": [*celery, "beat", "-l", "warning", "--pidfile="],
        }
        self.procs: dict[str, subprocess.Popen] = {}
        self.held: set[str] = set()
        self.crashes: list[tuple[float, str, int]] = []  # (time, kind, exit status) of exits no fault caused
        self.lock = threading.Lock()
        self.closed = False  # once stopping, nothing starts again

    def start(self, kind: str) -> None:
        if self.closed:
            return
        LOGS.mkdir(parents=True, exist_ok=True)
        out = open(LOGS / f"{kind}.log", "ab")
        out.write(f"\n===== {time.strftime('%H:%M:%S')} start =====\n".encode())
        out.flush()
        self.procs[kind] = subprocess.Popen(
            self.commands[kind], cwd=ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )

    def start_all(self) -> None:
        for kind in KINDS:
            self.start(kind)

    def kill(self, kind: str) -> None:
        """SIGKILL the process and every process it started (gunicorn's and celery's children)."""
        with self.lock:
            self.held.add(kind)
            proc = self.procs[kind]
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(timeout=30)

    def release(self, kind: str) -> None:
        with self.lock:
            self.start(kind)
            self.held.discard(kind)

    def supervise(self) -> None:
        with self.lock:
            for kind, proc in list(self.procs.items()):
                if kind in self.held or proc.poll() is None:
                    continue
                self.crashes.append((time.time(), kind, proc.returncode))
                log(f"supervisor: {kind} exited with status {proc.returncode}; restarting it")
                try:  # its children too, if any are left
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.start(kind)

    def stop_all(self) -> None:
        with self.lock:
            self.closed = True
            self.held.update(self.procs)
            for proc in self.procs.values():
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
            for proc in self.procs.values():
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    pass
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass


# --- Setup ------------------------------------------------------------------------------------------------

SETUP = """
import json
from apps.connections.models import Connection
from apps.deliveries.services import webhook_endpoint_create
from apps.tenants.services import product_create
from apps.workflows.services import workflow_create, workflow_publish
product, key = product_create(name="Chaos", actor="chaos")
connection = Connection.objects.create(product=product, name="shop", host="127.0.0.1", port={customer_port},
                                       database="shop", user="postgres")
hook = webhook_endpoint_create(product=product, url="http://127.0.0.1:{http_port}/hook", actor="chaos")
source = {{"type": "database", "connection": str(connection.id)}}
webhook = [{{"type": "notify", "channel": "webhook", "webhook": str(hook.id)}}]
definitions = {{
    "db-order-created": {{"trigger": {{**source, "table": "public.orders", "events": ["row.created"],
                                       "for_each": "row"}}, "steps": webhook}},
    "db-order-paid": {{"trigger": {{**source, "table": "public.orders", "events": ["row.updated"],
                                    "columns": ["status"], "for_each": "row"}}, "steps": webhook}},
    "db-signup-email": {{"trigger": {{**source, "table": "public.signups", "events": ["row.created"],
                                      "for_each": "row", "recipient": {{"id": "row.id", "email": "row.email"}}}},
                        "steps": [{{"type": "notify", "channel": "email", "to": "{{{{ recipient.email }}}}",
                                   "subject": "Welcome, signup {{{{ row.id }}}}",
                                   "body": "Signup {{{{ row.id }}}} is in."}}]}},
    "api-hook": {{"trigger": {{"type": "api"}}, "steps": webhook}},
    "api-email": {{"trigger": {{"type": "api"}},
                  "steps": [{{"type": "notify", "channel": "email", "subject": "Hello {{{{ recipient.id }}}}",
                             "body": "Message for {{{{ recipient.id }}}}."}}]}},
}}
for key_, definition in definitions.items():
    workflow_publish(workflow=workflow_create(product=product, key=key_, actor="chaos", definition=definition),
                     actor="chaos")
print(json.dumps({{"key": key, "secret": hook.secret}}))
"""

CUSTOMER_SCHEMA = """
CREATE TABLE public.orders (id bigint PRIMARY KEY, status text NOT NULL DEFAULT 'new', total numeric(12, 2));
CREATE TABLE public.signups (id bigint PRIMARY KEY, email text NOT NULL);
"""


def manage(env: dict, *args: str, code: str | None = None) -> str:
    command = [sys.executable, "manage.py", *args] + (["--no-imports", "-c", code] if code else [])
    out = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    return out.stdout.strip()


# --- The load ---------------------------------------------------------------------------------------------


class Plan:
    """What the run sends, drawn from the seeded RNG: the writer's statements and the trigger calls, and the
    key of every message they cause (as the sinks derive it).

    A steady part (1 - `burst` of each kind) is spread over the load; the rest comes at once at its end, as a
    bulk INSERT, a bulk UPDATE, a bulk INSERT of signups and trigger calls of 50 recipients, so that there is
    a backlog to drain while the last faults strike. `steady_statements` and `steady_calls` say where the
    burst begins in `statements` and `calls`."""

    def __init__(self, rng: random.Random, messages: int, burst: float):
        self.orders = int(messages * 0.35)
        self.paid = int(messages * 0.20)
        self.signups = int(messages * 0.12)
        self.api_hooks = int(messages * 0.22)
        self.api_emails = messages - self.orders - self.paid - self.signups - self.api_hooks
        self.burst = burst
        self.statements, self.steady_statements = self._statements(rng)
        self.calls, self.steady_calls = self._calls(rng)

    def _steady(self, total: int) -> int:
        return total - int(total * self.burst)

    @staticmethod
    def _sizes(rng: random.Random, total: int, largest: int) -> list[int]:
        """Statement or call sizes summing to `total`: half single rows, the others 2..largest."""
        sizes = []
        while total > 0:
            n = 1 if rng.random() < 0.5 else rng.randint(2, largest)
            n = min(n, total)
            sizes.append(n)
            total -= n
        return sizes

    def _statements(self, rng: random.Random) -> tuple[list[tuple[str, list[int]]], int]:
        steady_orders, steady_signups = self._steady(self.orders), self._steady(self.signups)
        inserts = []
        next_id = 1
        for n in self._sizes(rng, steady_orders, 300):
            inserts.append(("orders", list(range(next_id, next_id + n))))
            next_id += n
        signups = []
        next_id = 1
        for n in self._sizes(rng, steady_signups, 100):
            signups.append(("signups", list(range(next_id, next_id + n))))
            next_id += n
        # The steady updates pay orders of the steady inserts: their ids, shuffled, cut into statements; each is
        # placed after the insert of its last row. The burst's update pays orders of either part.
        order_ids = list(range(1, self.orders + 1))
        steady_paid = min(self._steady(self.paid), steady_orders)
        paid_ids = rng.sample(order_ids[:steady_orders], steady_paid)
        burst_paid = rng.sample(sorted(set(order_ids) - set(paid_ids)), self.paid - steady_paid)
        updates = []
        for n in self._sizes(rng, steady_paid, 300):
            updates.append(("paid", paid_ids[:n]))
            paid_ids = paid_ids[n:]
        ordered: list[tuple[str, list[int]]] = []
        pending = sorted(updates, key=lambda u: max(u[1]))
        signup_at: dict[int, list] = defaultdict(list)
        for i, statement in enumerate(signups):
            signup_at[i * len(inserts) // len(signups)].append(statement)
        for i, statement in enumerate(inserts):
            ordered.append(statement)
            while pending and max(pending[0][1]) <= statement[1][-1]:
                ordered.append(pending.pop(0))
            ordered.extend(signup_at.pop(i, []))
        for rest in signup_at.values():
            ordered.extend(rest)
        ordered.extend(pending)
        steady = len(ordered)
        burst = [
            ("orders", order_ids[steady_orders:]),
            ("paid", burst_paid),
            ("signups", list(range(steady_signups + 1, self.signups + 1))),
        ]
        ordered.extend(b for b in burst if b[1])
        return ordered, steady

    def _calls(self, rng: random.Random) -> tuple[list[tuple[str, list[str]]], int]:
        steady: list[tuple[str, list[str]]] = []
        burst: list[tuple[str, list[str]]] = []
        for workflow, prefix, total in (("api-hook", "h", self.api_hooks), ("api-email", "e", self.api_emails)):
            n = 0
            for size in self._sizes(rng, self._steady(total), 20):
                steady.append((workflow, [f"{prefix}{n + i}" for i in range(size)]))
                n += size
            while n < total:
                size = min(50, total - n)
                burst.append((workflow, [f"{prefix}{n + i}" for i in range(size)]))
                n += size
        rng.shuffle(steady)
        rng.shuffle(burst)
        return steady + burst, len(steady)

    def expected(self, orders: set, paid: set, signups: set) -> set[str]:
        keys = {f"db-order-created:{i}" for i in orders}
        keys |= {f"db-order-paid:{i}" for i in paid}
        keys |= {f"mail:s{i}@example.com" for i in signups}
        for workflow, recipients in self.calls:
            if workflow == "api-hook":
                keys |= {f"api-hook:{r}" for r in recipients}
            else:
                keys |= {f"mail:{r}@example.com" for r in recipients}
        return keys


class Load:
    """The writer (one thread, customer database) and the callers (threads, trigger API), each paced over
    `seconds`; every statement and call is repeated until it has taken effect."""

    def __init__(
        self, plan: Plan, *, customer: PrivatePostgres, web_port: int, api_key: str, seconds: float, callers: int
    ):
        self.plan = plan
        self.customer = customer
        self.web_port = web_port
        self.api_key = api_key
        self.seconds = seconds
        self.callers = callers
        self.stop = threading.Event()
        self.done_statements = 0
        self.done_calls = 0
        self.statement_retries = 0
        self.call_retries = 0
        self.call_answers: Counter = Counter()
        self.accepted: dict[int, str] = {}  # call index -> request id
        self.errors: list[str] = []
        self.threads: list[threading.Thread] = []
        self.began = 0.0

    def start(self) -> None:
        self.began = time.monotonic()
        self.threads = [threading.Thread(target=self._guarded, args=(self._write,), name="writer", daemon=True)]
        self.threads += [
            threading.Thread(target=self._guarded, args=(self._call, n), name=f"caller-{n}", daemon=True)
            for n in range(self.callers)
        ]
        for t in self.threads:
            t.start()

    def alive(self) -> bool:
        return any(t.is_alive() for t in self.threads)

    def _guarded(self, target, *args) -> None:
        try:
            target(*args)
        except Exception:  # noqa: BLE001 - reported, and the run fails
            self.errors.append(traceback.format_exc())
            log(f"load thread failed:\n{self.errors[-1]}")

    def _pace(self, index: int, steady: int) -> None:
        """Wait until item `index` is due: the steady ones evenly over the load, the burst's at its end."""
        due = self.began + self.seconds * min(index, steady) / max(steady, 1)
        while not self.stop.is_set() and time.monotonic() < due:
            time.sleep(min(0.05, due - time.monotonic()))

    def _write(self) -> None:
        import psycopg

        connection = None
        statements = self.plan.statements
        for index, (kind, ids) in enumerate(statements):
            self._pace(index, self.plan.steady_statements)
            while not self.stop.is_set():
                try:
                    if connection is None or connection.closed:
                        connection = psycopg.connect(self.customer.dsn("shop"), autocommit=True, connect_timeout=3)
                    if kind == "orders":
                        connection.execute(
                            "INSERT INTO public.orders (id, total) SELECT i, i %% 1000 FROM unnest(%s::bigint[]) i "
                            "ON CONFLICT (id) DO NOTHING",
                            [ids],
                        )
                    elif kind == "signups":
                        connection.execute(
                            "INSERT INTO public.signups (id, email) SELECT i, 's' || i || '@example.com' "
                            "FROM unnest(%s::bigint[]) i ON CONFLICT (id) DO NOTHING",
                            [ids],
                        )
                    else:
                        connection.execute(
                            "UPDATE public.orders SET status = 'paid' WHERE id = ANY(%s::bigint[]) AND status = 'new'",
                            [ids],
                        )
                    break
                except psycopg.Error:
                    # The server restarted (or the statement's outcome is unknown): repeat it; it is idempotent.
                    self.statement_retries += 1
                    try:
                        if connection is not None:
                            connection.close()
                    except psycopg.Error:
                        pass
                    connection = None
                    time.sleep(0.3)
            self.done_statements += 1
        if connection is not None:
            connection.close()

    def _call(self, n: int) -> None:
        import urllib3

        pool = urllib3.PoolManager(retries=False, timeout=urllib3.Timeout(connect=2, read=10))
        calls = self.plan.calls
        headers = {"Authorization": f"Api-Key {self.api_key}", "Content-Type": "application/json"}
        for index in range(n, len(calls), self.callers):
            self._pace(index, self.plan.steady_calls)
            workflow, recipients = calls[index]
            to = [{"id": r} if workflow == "api-hook" else {"id": r, "email": f"{r}@example.com"} for r in recipients]
            body = json.dumps({"workflow": workflow, "to": to, "data": {"call": index}}).encode()
            while not self.stop.is_set():
                try:
                    response = pool.request(
                        "POST",
                        f"http://127.0.0.1:{self.web_port}/api/v1/trigger",
                        body=body,
                        headers={**headers, "Idempotency-Key": f"chaos-call-{index}"},
                    )
                    self.call_answers[response.status] += 1
                    if response.status == 202:
                        self.accepted[index] = json.loads(response.data)["request_id"]
                        break
                    wait = float(response.headers.get("Retry-After") or 0.5)
                except (urllib3.exceptions.HTTPError, OSError) as exc:
                    self.call_answers[exc.__class__.__name__] += 1
                    wait = 0.5
                self.call_retries += 1
                time.sleep(min(wait, 2.0))
            self.done_calls += 1


# --- Faults -----------------------------------------------------------------------------------------------


class Faults:
    """A seeded schedule of faults over [start, end] seconds after the load starts, applied by one thread.
    Each fault is recorded with when it began and when the system was whole again (the process or server
    restarted, the sink answering normally)."""

    def __init__(
        self,
        rng: random.Random,
        *,
        start: float,
        load_end: float,
        end: float,
        kills: int,
        drain: int,
        window: float,
        processes: Processes,
        service: PrivatePostgres,
        customer: PrivatePostgres,
        redis: PrivateRedis,
        sink_url: str,
    ):
        self.processes = processes
        self.service = service
        self.customer = customer
        self.redis = redis
        self.sink_url = sink_url
        self.window = window
        self.rng = rng
        faults = [f"kill {kind}" for kind in KINDS for _ in range(kills)]
        faults += ["restart redis", "restart redis", "flushall redis"]
        faults += ["restart service postgres", "restart service postgres"]
        faults += ["restart customer postgres", "restart customer postgres"]
        sink_faults = ["webhook 500", "webhook reset", "smtp 451"]
        rng.shuffle(faults)
        rng.shuffle(sink_faults)
        sink_faults.insert(0, "webhook timeout")
        # While the load runs: most faults, on slots along [start, load_end]. While it drains (the burst at the
        # load's end makes a backlog): `drain` faults; the receiver's timeouts as the burst lands (each send then
        # hangs until ROWBELL_HTTP_TIMEOUT), a worker's SIGKILL while it waits on them, then the others on slots
        # along [load_end + 5, end].
        faults.remove("kill worker")
        drain = max(drain, 2)
        self.schedule = self._slots(rng, faults[drain - 2 :] + sink_faults[1:], start, load_end, sink_faults)
        self.schedule.append((load_end + rng.uniform(0.5, 1.5), sink_faults[0]))
        self.schedule.append((load_end + rng.uniform(2.5, 4.5), "kill worker"))
        self.schedule += self._slots(rng, faults[: drain - 2], load_end + 5, end, sink_faults)
        self.schedule.sort()
        self.applied: list[dict] = []
        self.errors: list[str] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="faults", daemon=True)
        self.base = 0.0
        self.pending_sink: list[tuple[float, str]] = []  # (when to end, mode) of sink windows in progress

    def _slots(self, rng: random.Random, faults: list[str], start: float, end: float, sink: list[str]) -> list:
        """(time, fault) for `faults` in random order, one per equal slot of [start, end], at a random point of
        its slot; the sinks' windows never overlap one another and end by `end`."""
        width = (end - start) / max(len(faults), 1)
        for _ in range(10_000):
            order = list(faults)
            rng.shuffle(order)
            sink_slots = [i for i, f in enumerate(order) if f in sink]
            ends_inside = not sink_slots or start + width * (sink_slots[-1] + 1) + self.window <= end
            if ends_inside and all(b - a >= self.window / width + 1 for a, b in zip(sink_slots, sink_slots[1:])):
                break
        else:
            raise ValueError("the faults' span is too short for the sinks' windows: lengthen the load")
        return [(start + width * (i + rng.uniform(0.05, 0.95)), fault) for i, fault in enumerate(order)]

    def start(self, base: float) -> None:
        self.base = base
        self.thread.start()

    def alive(self) -> bool:
        return self.thread.is_alive()

    def _sink(self, **modes: str) -> None:
        import urllib3

        query = "&".join(f"{k}={v}" for k, v in modes.items())
        urllib3.PoolManager().request("GET", f"{self.sink_url}/mode?{query}", timeout=5)

    def _run(self) -> None:
        for at, fault in self.schedule:
            while not self.stop.is_set() and time.monotonic() < self.base + at:
                self._sink_windows_end()
                time.sleep(0.05)
            if self.stop.is_set():
                return
            began = time.monotonic()
            record = {"fault": fault, "at": began - self.base}
            try:
                self._apply(fault, record)
            except Exception:  # noqa: BLE001 - reported; the run goes on
                self.errors.append(f"{fault}: {traceback.format_exc()}")
                log(f"fault {fault} failed:\n{self.errors[-1]}")
            if "until" not in record:
                record["until"] = time.monotonic() - self.base
            self.applied.append(record)
            log(f"fault {fault} at {record['at']:.1f} s, whole again at {record['until']:.1f} s")
        while self.pending_sink and not self.stop.is_set():
            self._sink_windows_end()
            time.sleep(0.05)

    def _sink_windows_end(self) -> None:
        now = time.monotonic()
        for item in list(self.pending_sink):
            if now >= item[0]:
                self._sink(**{item[1]: "ok"})
                self.pending_sink.remove(item)

    def _apply(self, fault: str, record: dict) -> None:
        pause = round(self.rng.uniform(1.0, 3.0), 1)
        action, target = fault.split(" ", 1)
        if action == "kill":
            self.processes.kill(target)
            time.sleep(pause)
            self.processes.release(target)
            record["pause"] = pause
        elif fault == "restart redis":
            self.redis.restart(pause)
            record["pause"] = pause
        elif fault == "flushall redis":
            self.redis.cli("flushall")
        elif action == "restart":
            server = self.service if target.startswith("service") else self.customer
            server.restart_immediate(pause)
            record["pause"] = pause
        else:  # a sink misbehaves for `window` seconds
            channel, mode = action, target
            self._sink(**{channel: mode})
            self.pending_sink = [p for p in self.pending_sink if p[1] != channel]  # this window supersedes it
            ends = time.monotonic() + self.window
            self.pending_sink.append((ends, channel))
            record["until"] = ends - self.base
            record["pause"] = self.window


# --- Checks -----------------------------------------------------------------------------------------------


def sink_records(sink_url: str, since: int = 0) -> list:
    import urllib3

    response = urllib3.PoolManager().request("GET", f"{sink_url}/dump?since={since}", timeout=30)
    return json.loads(response.data)


def service_state(service: PrivatePostgres) -> dict:
    """What is not finished yet in the service database (None if it cannot be read now)."""
    import psycopg

    try:
        with psycopg.connect(service.dsn("rowbell"), connect_timeout=3) as c:
            deliveries: dict[str, int] = dict(
                c.execute("SELECT status, count(*) FROM deliveries_delivery GROUP BY status").fetchall()
            )
            runs: dict[str, int] = dict(c.execute("SELECT status, count(*) FROM runs_run GROUP BY status").fetchall())
            requests: dict[str, int] = dict(
                c.execute("SELECT status, count(*) FROM runs_triggerrequest GROUP BY status").fetchall()
            )
        return {"deliveries": deliveries, "runs": runs, "requests": requests}
    except psycopg.Error:
        return {}


def finished(state: dict) -> bool:
    if not state:
        return False
    return (
        set(state["deliveries"]) <= {"delivered", "sent"}
        and set(state["runs"]) <= {"completed"}
        and set(state["requests"]) <= {"started"}
    )


def delivery_rows(service: PrivatePostgres) -> list[tuple]:
    """Every delivery: (message id, status, channel, attempt_count, attempt rows, attempts of unknown outcome,
    failed attempts)."""
    import psycopg

    with psycopg.connect(service.dsn("rowbell")) as c:
        return c.execute(
            """
            SELECT d.message_id, d.status, d.channel, d.attempt_count,
                   count(a.id), count(a.id) FILTER (WHERE a.outcome = 'unknown'),
                   count(a.id) FILTER (WHERE a.outcome = 'failure')
            FROM deliveries_delivery d LEFT JOIN deliveries_deliveryattempt a ON a.delivery_id = d.id
            GROUP BY d.id
            """
        ).fetchall()


def customer_truth(customer: PrivatePostgres) -> tuple[set, set, set]:
    import psycopg

    with psycopg.connect(customer.dsn("shop")) as c:
        orders = {r[0] for r in c.execute("SELECT id FROM public.orders")}
        paid = {r[0] for r in c.execute("SELECT id FROM public.orders WHERE status = 'paid'")}
        signups = {r[0] for r in c.execute("SELECT id FROM public.signups")}
    return orders, paid, signups


def analyse(expected: set[str], records: list, deliveries: list[tuple]) -> dict:
    """Match what the sinks received with what was expected and with what the service database recorded."""
    acked = {200, 250}
    ids_by_key: dict[str, set] = defaultdict(set)
    acks_by_key: Counter = Counter()
    received_by_id: Counter = Counter()
    answers: Counter = Counter()
    for kind, _, message_id, key, answer in records:
        ids_by_key[key].add(message_id)
        received_by_id[message_id] += 1
        answers[f"{kind} {answer}"] += 1
        if answer in acked:
            acks_by_key[key] += 1
    lost = sorted(expected - set(acks_by_key))
    unexpected = sorted(set(ids_by_key) - expected)
    duplicates = sum(n - 1 for n in acks_by_key.values() if n > 1)
    duplicate_keys = [k for k, n in acks_by_key.items() if n > 1]
    conflicting = sorted(k for k, ids in ids_by_key.items() if len(ids) > 1)
    by_id = {row[0]: row for row in deliveries}
    not_final = Counter(row[1] for row in deliveries if row[1] not in ("delivered", "sent"))
    count_mismatch = [row[0] for row in deliveries if row[3] != row[4]]
    unrecorded = [m for m in received_by_id if m not in by_id]
    over_received = [m for m, n in received_by_id.items() if m in by_id and n > by_id[m][4]]
    never_received = [row[0] for row in deliveries if row[0] not in received_by_id]
    return {
        "expected": len(expected),
        "received": len(records),
        "acked": sum(acks_by_key.values()),
        "answers": dict(sorted(answers.items())),
        "lost": lost,
        "unexpected": unexpected,
        "duplicates": duplicates,
        "copies": len(records) - len(ids_by_key),
        "duplicate_keys": len(duplicate_keys),
        "conflicting": conflicting,
        "deliveries": len(deliveries),
        "not_final": dict(not_final),
        "count_mismatch": count_mismatch,
        "unrecorded": unrecorded,
        "over_received": over_received,
        "never_received": never_received,
        "attempts": sum(row[4] for row in deliveries),
        "attempts_unknown": sum(row[5] for row in deliveries),
        "attempts_failed": sum(row[6] for row in deliveries),
        "attempt_count_sum": sum(row[3] for row in deliveries),
        "max_attempts_used": max((row[4] for row in deliveries), default=0),
    }


# --- The report -------------------------------------------------------------------------------------------


def report(r: dict) -> str:
    a = r["analysis"]
    ok = r["ok"]
    faults = r["faults"]
    by_kind = Counter(f["fault"] for f in faults)
    fault_rows = "\n".join(
        f"| {f['at']:.1f} | {f['fault']} | {f.get('pause', 0):.1f} | {f['until']:.1f} |" for f in faults
    )
    kind_rows = "\n".join(f"| {kind} | {n} |" for kind, n in sorted(by_kind.items()))
    crashes = r["crashes"]
    crash_text = (
        "none" if not crashes else "; ".join(f"{kind} exited ({status}) at {t:.1f} s" for t, kind, status in crashes)
    )
    lost_text = ", ".join(a["lost"][:20]) + (" ..." if len(a["lost"]) > 20 else "")
    answers = ", ".join(f"{k}: {v:,}" for k, v in a["answers"].items())
    drain = r["drain_after_last_fault"]
    drain_text = f"{drain:.1f} s" if drain is not None else f"not drained within {r['drain_timeout']} s"
    return f"""# Reliability under faults (`make chaos`)

`bench/chaos.py` proves that no message is lost under the faults production brings. It runs every Procfile
process kind (web under gunicorn, dispatcher, listener, worker, beat) with production settings against
private throwaway servers (a service PostgreSQL, a customer PostgreSQL and a Redis, on free ports), drives a
mixed load, and kills, restarts and degrades everything at random moments from a seeded RNG, while the load
runs and while it drains. Then it checks every message, end to end.

## What it does

- **Load** ({r["messages"]:,} messages): row changes committed to the customer database (INSERTs and UPDATEs,
  half of them one row, the others up to 300 rows per statement) start per-row workflows:
  `db-order-created` and `db-order-paid` send one webhook per row, `db-signup-email` one email per row through
  an SMTP provider configured with `PUT /api/v1/providers/email`; trigger calls (`POST /api/v1/trigger`,
  1 to 20 recipients each) start `api-hook` (a webhook per recipient) and `api-email` (an email per recipient).
  Every statement and call is repeated until it is known to have taken effect (`INSERT ... ON CONFLICT DO
  NOTHING`, `UPDATE ... WHERE status = 'new'`, the same `Idempotency-Key`), so the sending side knows exactly
  which messages are expected; the customer tables are read at the end to confirm it. {1 - r["burst"]:.0%} of
  the messages are spread evenly over {r["load_seconds"]:.0f} s; the other {r["burst"]:.0%} come at once at the end
  (one INSERT of {r["burst_orders"]:,} orders, one UPDATE paying {r["burst_paid"]:,}, one INSERT of
  {r["burst_signups"]:,} signups, trigger calls of 50 recipients), a backlog to drain while the last faults strike.
- **Receivers**: one asyncio process with the webhook receiver (it checks every signature) and an SMTP sink
  (aiosmtpd). Each records every message it is handed with its `webhook-id` / `X-Rowbell-Message-Id`, the
  message's key (workflow and row id, or recipient) and what it answered.
- **Faults** ({r["faults_during_load"]} while the load runs, {r["faults_during_drain"]} while the burst drains): SIGKILL
  of each process kind's whole process group, restarted after 1 to 3 s as a process
  manager would; Redis killed and started again empty (it keeps nothing on disk), and a FLUSHALL; the service
  and the customer PostgreSQL stopped with `pg_ctl stop -m immediate` and started again (crash recovery); the
  receiver answering 500, timing out (answering after {r["slow"]:.0f} s, past `ROWBELL_HTTP_TIMEOUT`) and
  resetting connections, and the SMTP sink answering `451 4.3.0`, {r["window"]:.0f} s each. A supervisor also
  restarts any process that exits on its own, counted as a crash.
- **Settings** (besides production's): retries `{r["env"]["ROWBELL_RETRY_SCHEDULE_WEBHOOK"]}` s for webhooks,
  email and steps; `ROWBELL_LEASE_SECONDS={r["env"]["ROWBELL_LEASE_SECONDS"]}`,
  `ROWBELL_RECONCILE_INTERVAL={r["env"]["ROWBELL_RECONCILE_INTERVAL"]}`,
  `ROWBELL_REQUEUE_AFTER_SECONDS={r["env"]["ROWBELL_REQUEUE_AFTER_SECONDS"]}`,
  `ROWBELL_HTTP_TIMEOUT={r["env"]["ROWBELL_HTTP_TIMEOUT"]}`; gunicorn with {r["web_workers"]} workers, a
  `celery worker` with {r["worker_concurrency"]} processes.
- **Checks**, after the drain: every expected message was acknowledged by the receiver or the sink at least
  once; every copy of a message carried the same id; every delivery is final and successful
  (delivered / sent); each delivery's `attempt_count` equals its `DeliveryAttempt` rows; and what the
  receivers were handed per message (every answer, failures included) is at most the attempts recorded for it
  (attempts recorded as `unknown`, for killed workers, included).

## Last run

Seed {r["seed"]}, {time.strftime("%Y-%m-%d", time.gmtime(r["started_at"]))}, {os.cpu_count()} cores; the whole run
took {r["total_seconds"]:.0f} s.

| figure | value |
|---|---|
| **result** | **{"PASS: nothing lost, everything recorded" if ok else "FAIL"}** |
| messages expected | {a["expected"]:,} ({r["breakdown"]}) |
| faults injected | {len(faults)} (table below) |
| **lost** | **{len(a["lost"])}** |
| duplicates (acknowledged copies beyond the first) | {a["duplicates"]:,} over {a["duplicate_keys"]:,} messages |
| copies handed to the sinks beyond each message's first (any answer: retries, duplicates) | {a["copies"]:,} |
| messages whose copies carried different ids | {len(a["conflicting"])} |
| messages received that were not expected | {len(a["unexpected"])} |
| time to drain after the last fault | {drain_text} |
| deliveries in the service database | {a["deliveries"]:,}, not final or not successful: {a["not_final"] or "none"} |
| attempts recorded | {a["attempts"]:,} ({a["attempts_failed"]:,} failed, {a["attempts_unknown"]:,} unknown outcome); sum of attempt_count: {a["attempt_count_sum"]:,} |
| deliveries whose attempt_count differs from their attempt rows | {len(a["count_mismatch"])} |
| messages received by the sinks (every answer) | {a["received"]:,}, of which acknowledged {a["acked"]:,} |
| messages received more often than attempts recorded | {len(a["over_received"])} |
| messages received with an id the service database does not have | {len(a["unrecorded"])} |
| most attempts of one delivery | {a["max_attempts_used"]} |
| process exits no fault caused | {crash_text} |
| writer statements repeated after an error | {r["statement_retries"]:,} |
| trigger calls repeated (answers: {r["call_answers"]}) | {r["call_retries"]:,} |

What the sinks answered: {answers}.
{f"Lost (first 20): {lost_text}." if a["lost"] else ""}

Faults by kind:

| fault | times |
|---|---|
{kind_rows}

Faults in order (seconds after the load began; "whole again" is when the process or server was back, or
the sink answered normally again):

| at (s) | fault | down (s) | whole again (s) |
|---|---|---|---|
{fault_rows}

The load ended {r["load_ended"]:.1f} s after it began; the last fault ended at {r["last_fault"]:.1f} s; the last
expected message was acknowledged at {r["last_ack"]:.1f} s.

Command: `make chaos` (runs `{r["command"]}`).
"""


def doc_write(text: str) -> None:
    """Write the run's figures between the markers of docs/reliability.md, leaving the rest (the findings) alone."""
    section_write("chaos", text, doc=DOC)


# --- Main -------------------------------------------------------------------------------------------------


def main() -> int:  # noqa: PLR0915 - one run, in order
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=1, help="seeds the load's shape and the faults' schedule")
    parser.add_argument("--messages", type=int, default=10_000, help="messages expected (at least 10,000 by default)")
    parser.add_argument("--load-seconds", type=float, default=150, help="the load is spread over this long")
    parser.add_argument("--burst", type=float, default=0.4, help="share of the messages sent at once at the end")
    parser.add_argument("--fault-tail", type=float, default=24, help="faults go on this long after the load")
    parser.add_argument("--drain-faults", type=int, default=6, help="faults while the burst drains (one a sink's)")
    parser.add_argument("--kills", type=int, default=2, help="SIGKILLs of each process kind")
    parser.add_argument("--sink-window", type=float, default=8, help="seconds each receiver / sink fault lasts")
    parser.add_argument("--drain-timeout", type=float, default=360, help="seconds to wait for the drain")
    parser.add_argument("--retry-schedule", default="1,2,4,8,8,8,8,8,8,8", help="seconds before each retry")
    parser.add_argument("--web-workers", type=int, default=2)
    parser.add_argument("--worker-concurrency", type=int, default=2)
    parser.add_argument("--callers", type=int, default=3, help="threads making trigger calls")
    parser.add_argument("--no-write", action="store_true", help="do not write docs/reliability.md")
    args = parser.parse_args()
    if args.drain_timeout < 0 or args.messages < 1:
        parser.error("--messages must be positive")

    rng = random.Random(args.seed)
    plan = Plan(random.Random(rng.random()), args.messages, args.burst)
    fault_rng = random.Random(rng.random())
    started_at = time.time()
    command = (
        f".venv/bin/python bench/chaos.py --seed {args.seed} --messages {args.messages} --load-seconds "
        f"{args.load_seconds:g} --burst {args.burst:g} --fault-tail {args.fault_tail:g} --drain-faults "
        f"{args.drain_faults} --kills {args.kills} --sink-window "
        f"{args.sink_window:g} --drain-timeout {args.drain_timeout:g} --retry-schedule {args.retry_schedule}"
    )
    log(f"chaos run: {command}")
    if LOGS.exists():
        shutil.rmtree(LOGS)
    LOGS.mkdir(parents=True)

    root = Path(tempfile.mkdtemp(prefix="rowbell-chaos-"))
    os.chmod(root, 0o755)
    service = PrivatePostgres(root, "service")
    customer = PrivatePostgres(root, "customer")
    redis = PrivateRedis(root)
    processes: Processes | None = None
    sinks: subprocess.Popen | None = None
    load: Load | None = None
    faults: Faults | None = None

    def terminate(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, terminate)
    try:
        # 1. Servers.
        for server in (service, customer):
            server.init()
            server.start()
        redis.start()
        service.psql("postgres", "CREATE DATABASE rowbell")
        customer.psql("postgres", "CREATE DATABASE shop")
        customer.psql("shop", CUSTOMER_SCHEMA)
        log(f"servers: service PostgreSQL :{service.port}, customer PostgreSQL :{customer.port}, Redis :{redis.port}")

        http_port, smtp_port, web_port = free_port(), free_port(), free_port()
        schedule = args.retry_schedule
        http_timeout = 3
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "config.settings.production",
            "DJANGO_SECRET_KEY": "chaos",
            "DATABASE_URL": service.url("rowbell"),
            "REDIS_URL": redis.url(0),
            "LOG_LEVEL": "WARNING",
            "DJANGO_ALLOWED_HOSTS": "127.0.0.1",
            "DJANGO_SECURE_SSL_REDIRECT": "false",
            "ROWBELL_PUBLIC_URL": f"http://127.0.0.1:{web_port}",
            "ROWBELL_ENCRYPTION_KEYS": KEY,
            "ROWBELL_CONNECTION_ALLOW": "127.0.0.0/8",
            "ROWBELL_OUTBOUND_ALLOW": "127.0.0.0/8",
            "ROWBELL_TRIGGER_RATE": "100000000/min",
            "ROWBELL_API_RATE": "100000000/min",
            "ROWBELL_RETRY_SCHEDULE_WEBHOOK": schedule,
            "ROWBELL_RETRY_SCHEDULE_EMAIL": schedule,
            "ROWBELL_RETRY_SCHEDULE_STEP": schedule,
            "ROWBELL_LEASE_SECONDS": "15",
            "ROWBELL_RECONCILE_INTERVAL": "2",
            "ROWBELL_REQUEUE_AFTER_SECONDS": "10",
            "ROWBELL_HTTP_TIMEOUT": str(http_timeout),
            "ROWBELL_HTTP_CONNECT_TIMEOUT": "2",
            "PYTHONUNBUFFERED": "1",
        }
        for name in ("REDIS_URL", "DATABASE_URL"):  # never inherit a pointer at the shared servers
            assert str(service.port) in env["DATABASE_URL"] and str(redis.port) in env["REDIS_URL"], name

        # 2. Schema and setup.
        manage(env, "migrate", "--noinput", "-v", "0")
        setup = json.loads(
            manage(env, "shell", code=SETUP.format(customer_port=customer.port, http_port=http_port)).splitlines()[-1]
        )
        sink_url = f"http://127.0.0.1:{http_port}"
        slow = http_timeout + 3
        sinks = subprocess.Popen(
            [
                sys.executable,
                "bench/chaos_sinks.py",
                "--http-port",
                str(http_port),
                "--smtp-port",
                str(smtp_port),
                "--secret",
                setup["secret"],
                "--slow",
                str(slow),
            ],
            cwd=ROOT,
            stdout=open(LOGS / "sinks.log", "wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

        # 3. Rowbell's processes.
        processes = Processes(env, web_port, args.web_workers, args.worker_concurrency)
        processes.start_all()
        import urllib3

        pool = urllib3.PoolManager(retries=False)
        deadline = time.monotonic() + 60
        while True:
            try:
                if pool.request("GET", f"http://127.0.0.1:{web_port}/ping", timeout=1).status == 200:
                    break
            except urllib3.exceptions.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the web did not answer /ping")
            time.sleep(0.2)
        answer = pool.request(
            "PUT",
            f"http://127.0.0.1:{web_port}/api/v1/providers/email",
            body=json.dumps(
                {
                    "provider": "smtp",
                    "credentials": {},
                    "options": {
                        "host": "127.0.0.1",
                        "port": smtp_port,
                        "security": "none",
                        "from_email": "chaos@example.com",
                    },
                }
            ),
            headers={"Authorization": f"Api-Key {setup['key']}", "Content-Type": "application/json"},
        )
        if answer.status not in (200, 201):
            raise RuntimeError(f"PUT /api/v1/providers/email answered {answer.status}: {answer.data[:500]!r}")
        time.sleep(5)  # workers ready, beat's first ticks done
        log(
            f"load: {args.messages:,} messages ({len(plan.statements):,} statements, {len(plan.calls):,} calls) "
            f"over {args.load_seconds:g} s"
        )

        # 4. Load and faults.
        load = Load(
            plan,
            customer=customer,
            web_port=web_port,
            api_key=setup["key"],
            seconds=args.load_seconds,
            callers=args.callers,
        )
        faults = Faults(
            fault_rng,
            start=5,
            load_end=args.load_seconds,
            end=args.load_seconds + args.fault_tail,
            kills=args.kills,
            drain=args.drain_faults,
            window=args.sink_window,
            processes=processes,
            service=service,
            customer=customer,
            redis=redis,
            sink_url=sink_url,
        )
        began, began_wall = time.monotonic(), time.time()
        load.start()
        faults.start(began)
        expected_now: set[str] | None = None
        acked: set[str] = set()
        seen = 0
        last_ack = 0.0
        load_ended = None
        drained_at = None
        state: dict = {}
        next_report = began + 10
        hard_deadline = began + args.load_seconds + args.fault_tail + args.drain_timeout
        while time.monotonic() < hard_deadline:
            processes.supervise()
            if load_ended is None and not load.alive():
                load_ended = time.monotonic() - began
                log(
                    f"load done at {load_ended:.1f} s ({load.statement_retries} statements and "
                    f"{load.call_retries} calls repeated)"
                )
            try:
                new = sink_records(sink_url, seen)
            except (urllib3.exceptions.HTTPError, ValueError):
                new = []
            seen += len(new)
            for _, at, _, key, answer_ in new:
                if answer_ in (200, 250) and key not in acked:
                    acked.add(key)
                    last_ack = at
            if load_ended is not None and not faults.alive():
                if expected_now is None:
                    orders, paid, signups = customer_truth(customer)
                    expected_now = plan.expected(orders, paid, signups)
                if expected_now <= acked:
                    state = service_state(service)
                    if finished(state):
                        drained_at = time.monotonic() - began
                        break
            if time.monotonic() >= next_report:
                next_report += 10
                log(
                    f"{time.monotonic() - began:.0f} s: {len(acked):,} messages acknowledged, {seen:,} received; "
                    f"statements {load.done_statements}/{len(plan.statements)}, calls {load.done_calls}/"
                    f"{len(plan.calls)}; faults {len(faults.applied)}/{len(faults.schedule)}"
                )
            time.sleep(1.0)
        if drained_at is None:
            log("drain timeout: checking what there is")
            state = service_state(service)
            log(f"service state: {state}")
        load.stop.set()
        faults.stop.set()
        faults.thread.join(timeout=90)
        time.sleep(3)  # a copy sent twice would arrive now

        # 5. Checks.
        processes.stop_all()
        records = sink_records(sink_url)
        orders, paid, signups = customer_truth(customer)
        planned_orders = {i for kind, ids in plan.statements if kind == "orders" for i in ids}
        planned_paid = {i for kind, ids in plan.statements if kind == "paid" for i in ids}
        planned_signups = {i for kind, ids in plan.statements if kind == "signups" for i in ids}
        writer_complete = load.done_statements == len(plan.statements)
        calls_complete = len(load.accepted) == len(plan.calls)
        table_matches = (orders, paid, signups) == (planned_orders, planned_paid, planned_signups)
        expected = plan.expected(orders, paid, signups)
        analysis = analyse(expected, records, delivery_rows(service))
        last_fault = max((f["until"] for f in faults.applied), default=0.0)
        stats = json.loads(pool.request("GET", f"{sink_url}/stats").data)
        ok = (
            drained_at is not None
            and writer_complete
            and calls_complete
            and table_matches
            and not load.errors
            and not faults.errors
            and not analysis["lost"]
            and not analysis["unexpected"]
            and not analysis["conflicting"]
            and not analysis["not_final"]
            and not analysis["count_mismatch"]
            and not analysis["unrecorded"]
            and not analysis["over_received"]
            and analysis["deliveries"] == len(expected)
            and stats["invalid"] == 0
        )
        result = {
            "ok": ok,
            "seed": args.seed,
            "messages": len(expected),
            "breakdown": (
                f"{len(orders):,} orders created, {len(paid):,} paid, {len(signups):,} signup emails, "
                f"{plan.api_hooks:,} API webhooks, {plan.api_emails:,} API emails"
            ),
            "load_seconds": args.load_seconds,
            "burst": args.burst,
            "burst_orders": len(plan.statements[-3][1]) if args.burst else 0,
            "burst_paid": len(plan.statements[-2][1]) if args.burst else 0,
            "burst_signups": len(plan.statements[-1][1]) if args.burst else 0,
            "faults_during_load": sum(1 for f in faults.applied if f["at"] < args.load_seconds),
            "faults_during_drain": sum(1 for f in faults.applied if f["at"] >= args.load_seconds),
            "analysis": analysis,
            "faults": faults.applied,
            "crashes": [(t - began_wall, k, s) for t, k, s in processes.crashes],
            "drain_after_last_fault": (drained_at - last_fault) if drained_at is not None else None,
            "drain_timeout": args.drain_timeout,
            "load_ended": load_ended or 0.0,
            "last_fault": last_fault,
            "last_ack": (last_ack - began_wall) if last_ack else 0.0,
            "statement_retries": load.statement_retries,
            "call_retries": load.call_retries,
            "call_answers": ", ".join(f"{k}: {v:,}" for k, v in sorted(load.call_answers.items(), key=str)),
            "slow": slow,
            "window": args.sink_window,
            "env": env,
            "web_workers": args.web_workers,
            "worker_concurrency": args.worker_concurrency,
            "started_at": started_at,
            "total_seconds": time.time() - started_at,
            "command": command,
        }
        text = report(result)
        print(text)
        print(
            json.dumps(
                {
                    "signatures": {"valid": stats["valid"], "invalid": stats["invalid"]},
                    "writer_complete": writer_complete,
                    "calls_complete": calls_complete,
                    "table_matches_plan": table_matches,
                    "load_errors": load.errors,
                    "fault_errors": faults.errors,
                    "lost": analysis["lost"][:50],
                    "unexpected": analysis["unexpected"][:50],
                    "conflicting": analysis["conflicting"][:50],
                    "count_mismatch": analysis["count_mismatch"][:50],
                    "unrecorded": analysis["unrecorded"][:50],
                    "over_received": analysis["over_received"][:50],
                    "never_received": analysis["never_received"][:50],
                    "final_state": state,
                },
                indent=1,
            )
        )
        (LOGS / "records.json").write_text(json.dumps(records))
        if not args.no_write:
            doc_write(text)
        log("PASS" if ok else "FAIL")
        return 0 if ok else 1
    except KeyboardInterrupt:
        log("interrupted: cleaning up")
        return 130
    finally:
        if load is not None:
            load.stop.set()
        if faults is not None:
            faults.stop.set()
            if faults.thread.is_alive():  # let a fault in progress finish (a server restarting) before cleaning up
                faults.thread.join(timeout=90)
        if processes is not None:
            processes.stop_all()
        if sinks is not None:
            try:
                os.killpg(sinks.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        redis.kill()
        for server in (service, customer):
            try:
                server.destroy()
            except Exception:  # noqa: BLE001 - go on cleaning up
                traceback.print_exc()
        for server in (service, customer):  # keep the servers' logs with the processes'
            if server.log.exists():
                shutil.copy(server.log, LOGS / f"postgres-{server.name}.log")
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
