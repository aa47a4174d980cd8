"""Benchmark: sustained end-to-end throughput, row change to delivered signed webhook.

    make bench-workflows     (or: .venv/bin/python bench/bench_workflows.py --seconds 20 --rate 1500)

1. A customer database with an `orders` table, a service database migrated from scratch, a product with
   a connection, a webhook endpoint pointing at a local asyncio receiver (bench/receiver.py), and a
   published workflow: database trigger on `row.created`, one webhook notify step.
2. The reference, in the same run: a plain keep-alive HTTP POST loop (urllib3, one thread) to the same
   receiver, with a body of the same size.
3. Rowbell's processes as deployed: one `celery worker` with two processes, the `listener`, `beat`.
   A writer commits one-row INSERTs (each one an event, a run and a webhook) at a steady offered rate.
4. Throughput is what the receiver counts per second over the steady middle of the run, and overall
   (every webhook delivered / time from the first commit to the last delivery). Then every run,
   delivery and attempt row is checked: each webhook was delivered once and recorded.
5. Figures and the command go to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.docs import section_write  # noqa: E402

SERVICE = "rowbell_bench_wf"
CUSTOMER = "rowbell_bench_wf_customer"
REDIS = "redis://127.0.0.1:6379/12"
PORT = 8055
KEY = "oPxlr5Sg1dmJx5_4Rru0XK3tWx9r7vnkcC2oWJ4Fq8c="  # fixed Fernet key, bench databases only


def env() -> dict:
    return {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings.production", "DJANGO_SECRET_KEY": "bench",
            "DATABASE_URL": f"postgres://postgres@127.0.0.1:5432/{SERVICE}", "REDIS_URL": REDIS,
            "ROWBELL_ENCRYPTION_KEYS": KEY, "ROWBELL_CONNECTION_ALLOW": "127.0.0.0/8",
            "ROWBELL_OUTBOUND_ALLOW": "127.0.0.0/8", "LOG_LEVEL": "WARNING", "DJANGO_ALLOWED_HOSTS": "127.0.0.1"}


def psql(db: str, statement: str) -> str:
    return subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", db, "-qtAc", statement],
                          check=True, capture_output=True, text=True).stdout.strip()


def django(code: str) -> str:
    return subprocess.run([sys.executable, "manage.py", "shell", "--no-imports", "-c", code], cwd=ROOT, env=env(),
                          check=True, capture_output=True, text=True).stdout.strip()


SETUP = f"""
from apps.connections.models import Connection
from apps.subscriptions.services import subscription_create
from apps.tenants.services import product_create
from apps.workflows.services import workflow_create, workflow_publish
product, _ = product_create(name="Bench", actor="bench")
connection = Connection.objects.create(product=product, name="shop", host="127.0.0.1", database="{CUSTOMER}",
                                       user="postgres")
hook = subscription_create(product=product, url="http://127.0.0.1:{PORT}/hook", actor="bench")
wf = workflow_create(product=product, key="order-created", actor="bench", definition={{
    "trigger": {{"type": "database", "connection": str(connection.id), "table": "public.orders",
                "events": ["row.created"]}},
    "steps": [{{"type": "notify", "channel": "webhook", "webhook": str(hook.id)}}]}})
workflow_publish(workflow=wf, actor="bench")
"""

CHECK = """
import json
from django.db.models import Count
from apps.deliveries.models import Delivery, DeliveryAttempt
from apps.runs.models import Run
print(json.dumps({
    "runs": Run.objects.count(),
    "runs_completed": Run.objects.filter(status="completed").count(),
    "deliveries": Delivery.objects.count(),
    "delivered": Delivery.objects.filter(status="delivered").count(),
    "attempts": DeliveryAttempt.objects.count(),
    "attempts_per_delivery_max": max([a["n"] for a in DeliveryAttempt.objects.values("delivery_id")
                                      .annotate(n=Count("id")).order_by("-n")[:1]] or [0]),
}))
"""


def cpu_by_process() -> dict[str, float]:
    """CPU seconds used so far by the processes still alive, summed by role."""
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        seconds = (int(fields[11]) + int(fields[12])) / tick
        name = ("PostgreSQL" if cmd.startswith("postgres") else
                "worker" if "celery" in cmd and " worker" in cmd else "beat" if "celery" in cmd and " beat" in cmd else
                "listener" if "run_listener" in cmd else "receiver" if "receiver.py" in cmd else None)
        if name:
            out[name] = out.get(name, 0.0) + seconds
    return out


def machine_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far, all cores, from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    tick = os.sysconf("SC_CLK_TCK")
    return (sum(fields) - idle) / tick, sum(fields) / tick


def count(pool) -> int:
    return int(pool.request("GET", f"http://127.0.0.1:{PORT}/count").data)


def plain_loop(seconds: float) -> float:
    """The reference: one thread POSTing a webhook-sized signed body over one keep-alive connection."""
    import urllib3

    pool = urllib3.PoolManager()
    body = json.dumps({"type": "workflow.notification", "timestamp": "2026-01-01T00:00:00+00:00",
                       "data": {"workflow": "order-created", "version": 1, "step": "step-1", "request_id": None,
                                "recipient": {}, "data": {}, "event": {
                                    "id": "evt_1", "type": "row.created", "table": "public.orders", "ids": [1],
                                    "occurred_at": "2026-01-01T00:00:00+00:00"}}}).encode()
    headers = {"Content-Type": "application/json", "webhook-id": "msg_" + "0" * 32,
               "webhook-timestamp": "1767225600", "webhook-signature": "v1," + "A" * 44}
    sent, start = 0, time.monotonic()
    while time.monotonic() - start < seconds:
        response = pool.request("POST", f"http://127.0.0.1:{PORT}/hook", body=body, headers=headers)
        assert response.status == 200
        sent += 1
    return sent / (time.monotonic() - start)


def start(name: str, args: list[str]) -> subprocess.Popen:
    log = open(ROOT / ".bench" / f"{name}.log", "wb")
    return subprocess.Popen(args, cwd=ROOT, env=env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def main():
    import urllib3

    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=20, help="how long the writer writes")
    parser.add_argument("--rate", type=int, default=1500, help="row changes committed per second (offered)")
    parser.add_argument("--plain-seconds", type=int, default=5)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    (ROOT / ".bench").mkdir(exist_ok=True)

    for db in (SERVICE, CUSTOMER):
        subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-qc", f"DROP DATABASE IF EXISTS {db} WITH (FORCE)"],
                       capture_output=True)
        psql("postgres", f"CREATE DATABASE {db}")
    psql(CUSTOMER, "CREATE TABLE public.orders (id bigserial PRIMARY KEY, status text NOT NULL, total numeric(12, 2))")
    subprocess.run(["redis-cli", "-n", REDIS.rsplit("/", 1)[1], "flushdb"], check=True, capture_output=True)
    subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=ROOT, env=env(), check=True)
    django(SETUP)

    procs = {"receiver": start("receiver", [sys.executable, "bench/receiver.py", "--port", str(PORT)])}
    time.sleep(1)
    pool = urllib3.PoolManager()
    try:
        plain = plain_loop(args.plain_seconds)
        print(f"plain keep-alive POST loop: {plain:.0f}/s", flush=True)
        base = count(pool)

        celery = [sys.executable, "-m", "celery", "-A", "config.celery_app"]
        procs["worker"] = start("worker", [*celery, "worker", "-Q", "high,normal,low", "-c", "2", "-l", "warning",
                                           "--without-gossip", "--without-mingle", "--without-heartbeat"])
        procs["beat"] = start("beat", [*celery, "beat", "-l", "warning"])
        procs["listener"] = start("listener", [sys.executable, "manage.py", "run_listener"])
        time.sleep(6)  # workers ready, first beat ticks done

        # The writer: pgbench committing one-row INSERTs at the offered rate (C, several connections, so
        # that the writer is not what limits the run).
        script = ROOT / ".bench" / "insert.sql"
        script.write_text("INSERT INTO public.orders (status, total) VALUES ('new', 1);\n")
        cpu_before, machine_before = cpu_by_process(), machine_busy()
        first = time.monotonic()
        writer = subprocess.Popen(["pgbench", "-h", "127.0.0.1", "-U", "postgres", "-n", "-M", "prepared", "-c", "4",
                                   "-j", "2", "-R", str(args.rate), "-T", str(args.seconds), "-f", str(script),
                                   CUSTOMER], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        samples = []  # (time, delivered so far)
        while writer.poll() is None:
            samples.append((time.monotonic(), count(pool) - base))
            time.sleep(0.25)
        written = time.monotonic()
        total = int(psql(CUSTOMER, "SELECT count(*) FROM public.orders"))
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            delivered = count(pool) - base
            samples.append((time.monotonic(), delivered))
            if delivered >= total:
                break
            time.sleep(0.2)
        last = next(t for t, n in samples if n >= total) if samples[-1][1] >= total else None
        cpu_after, machine_after = cpu_by_process(), machine_busy()
        time.sleep(3)  # anything sent twice would arrive now
        delivered = count(pool) - base
    finally:
        for proc in procs.values():
            os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs.values():
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)

    check = json.loads(django(CHECK).splitlines()[-1])
    # Steady state: the best 5-second window of the receiver's count while the writer was writing.
    window = [(t, n) for t, n in samples if t <= written]
    steady = max(((n2 - n1) / (t2 - t1) for (t1, n1) in window for (t2, n2) in window if 4.5 <= t2 - t1 <= 5.5),
                 default=0.0)
    overall = total / (last - first) if last else 0.0
    offered = total / (written - first)
    print(f"offered {offered:.0f}/s; steady {steady:.0f}/s; overall {overall:.0f}/s; delivered {delivered}/{total}; "
          f"{check}", flush=True)
    cpu = {name: (cpu_after[name] - cpu_before.get(name, 0.0)) * 1000 / max(delivered, 1) for name in cpu_after}
    busy = (machine_after[0] - machine_before[0]) / max(machine_after[1] - machine_before[1], 1e-9)
    cpu_rows = "\n".join(f"| {name} | {ms:.2f} |" for name, ms in sorted(cpu.items(), key=lambda x: -x[1]))
    print(cpu, flush=True)
    ok = check["runs"] == check["runs_completed"] == check["delivered"] == check["attempts"] == total
    result = f"""
One run: a plain keep-alive POST loop (urllib3, one thread, webhook-sized body) to a local asyncio receiver,
then Rowbell end to end against the same receiver: a writer commits one-row INSERTs into the customer's
`orders` table at a steady offered rate ({offered:.0f}/s for {args.seconds} s, {total:,} row changes); each is
captured, picked up by the `listener`, runs a published workflow (database trigger, one webhook step) in a
`celery worker` with two processes, and is delivered signed. `beat` runs too.

| | webhooks/s | ratio to the plain loop |
|---|---|---|
| plain keep-alive POST loop | {plain:.0f} | 1.00 |
| Rowbell, steady (best 5 s window while writing) | **{steady:.0f}** | **{steady / plain:.2f}** |
| Rowbell, overall (first commit to last delivery) | {overall:.0f} | {overall / plain:.2f} |

Delivered {delivered:,} webhooks for {total:,} row changes (the receiver's count, 3 s after the last one);
rows recorded: {check['runs']:,} runs ({check['runs_completed']:,} completed), {check['deliveries']:,} deliveries
({check['delivered']:,} delivered), {check['attempts']:,} attempts (at most {check['attempts_per_delivery_max']} per
delivery): {"every webhook delivered once and every attempt recorded" if ok and delivered == total else "MISMATCH"}.
Targets: at least 1,000 webhooks/s and 40% of the plain loop.

CPU per delivered webhook, from the first commit to the last delivery, by process (ms; processes that ran
throughout: PostgreSQL's count leaves out the writer's sessions, which end with it). The machine's
{os.cpu_count()} cores were {busy:.0%} busy over that time.

| process | CPU ms / webhook |
|---|---|
{cpu_rows}

Command: `make bench-workflows` (runs `.venv/bin/python bench/bench_workflows.py --seconds {args.seconds} --rate
{args.rate}`).
"""
    print(result)
    if not args.no_write:
        section_write("bench-workflows", result)


if __name__ == "__main__":
    main()
