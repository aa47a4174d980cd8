"""Benchmark: sustained end-to-end throughput, row change to delivered signed webhook.

    make bench-workflows     (or: .venv/bin/python bench/bench_workflows.py --seconds 20 --rate 3000)

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

Databases and Redis: the servers of DATABASE_URL and REDIS_URL in the environment (bench/common.py).
bench/bench_api_path.py runs `database_path` in its own run, for the ratio it reports beside its own.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import common  # noqa: E402
from bench.docs import section_write  # noqa: E402

SERVICE = "rowbell_bench_wf"
CUSTOMER = "rowbell_bench_wf_customer"
REDIS_DB = 12
PORT = 8055
KEY = "oPxlr5Sg1dmJx5_4Rru0XK3tWx9r7vnkcC2oWJ4Fq8c="  # fixed Fernet key, bench databases only


def env(*, database: str = SERVICE, redis_db: int = REDIS_DB) -> dict:
    """Production settings on a benchmark's own service database and Redis database."""
    return common.service_env(
        database=database,
        redis=common.redis_url(redis_db),
        ROWBELL_ENCRYPTION_KEYS=KEY,
        ROWBELL_CONNECTION_ALLOW="127.0.0.0/8",
        ROWBELL_OUTBOUND_ALLOW="127.0.0.0/8",
    )


def setup_code(
    *, customer: str = CUSTOMER, port: int = PORT, key: str = "order-created", event: str = "row.created"
) -> str:
    """`manage.py shell` code that makes the product, its connection to `customer`, a webhook endpoint at the
    receiver on `port` and a published workflow `key` (database trigger on `event` of public.orders, one
    webhook step); it prints the endpoint's signing secret."""
    host, pg_port, user = common.pg_server()
    return f"""
from apps.connections.models import Connection
from apps.subscriptions.services import subscription_create
from apps.tenants.services import product_create
from apps.workflows.services import workflow_create, workflow_publish
product, _ = product_create(name="Bench", actor="bench")
connection = Connection.objects.create(product=product, name="shop", host="{host}", port={pg_port},
                                       database="{customer}", user="{user}")
hook = subscription_create(product=product, url="http://127.0.0.1:{port}/hook", actor="bench")
wf = workflow_create(product=product, key="{key}", actor="bench", definition={{
    "trigger": {{"type": "database", "connection": str(connection.id), "table": "public.orders",
                "events": ["{event}"]}},
    "steps": [{{"type": "notify", "channel": "webhook", "webhook": str(hook.id)}}]}})
workflow_publish(workflow=wf, actor="bench")
print(hook.secret)
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


def database_path(*, seconds: int, rate: int, plain_seconds: int = 5) -> dict:
    """One run of the database path (see the module): the plain loop, then Rowbell end to end. Returns the
    figures: plain, steady, overall, offered (per second), total, delivered, check (row counts), cpu (ms per
    webhook by process), busy (share of the machine), ok."""
    import urllib3

    common.databases_recreate(SERVICE, CUSTOMER)
    common.psql(
        CUSTOMER, "CREATE TABLE public.orders (id bigserial PRIMARY KEY, status text NOT NULL, total numeric(12, 2))"
    )
    common.redis_flush(common.redis_url(REDIS_DB))
    common.migrate(env())
    secret = common.django(setup_code(), env()).splitlines()[-1]

    procs: dict = {}
    common.receiver_start(procs, PORT, secret=secret)
    pool = urllib3.PoolManager()
    try:
        plain = common.plain_loop(PORT, plain_seconds)
        print(f"plain keep-alive POST loop: {plain:.0f}/s", flush=True)

        def count() -> int:
            return common.receiver_stats(pool, PORT)["count"]

        common.workers_start(procs, env())
        time.sleep(6)  # workers ready, first beat ticks done

        # The writer: pgbench committing one-row INSERTs at the offered rate (C, several connections, so
        # that the writer is not what limits the run).
        script = common.LOGS / "insert.sql"
        script.write_text("INSERT INTO public.orders (status, total) VALUES ('new', 1);\n")
        cpu_before, machine_before = common.cpu_by_process(procs), common.machine_busy()
        first = time.monotonic()
        writer = subprocess.Popen(
            [
                "pgbench",
                *common.pg_args(),
                "-n",
                "-M",
                "prepared",
                "-c",
                "4",
                "-j",
                "2",
                "-R",
                str(rate),
                "-T",
                str(seconds),
                "-f",
                str(script),
                CUSTOMER,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        samples = []  # (time, delivered so far)
        while writer.poll() is None:
            samples.append((time.monotonic(), count()))
            time.sleep(0.25)
        written = time.monotonic()
        total = int(common.psql(CUSTOMER, "SELECT count(*) FROM public.orders"))
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            delivered = count()
            samples.append((time.monotonic(), delivered))
            if delivered >= total:
                break
            time.sleep(0.2)
        last = next(t for t, n in samples if n >= total) if samples[-1][1] >= total else None
        cpu_after, machine_after = common.cpu_by_process(procs), common.machine_busy()
        time.sleep(3)  # anything sent twice would arrive now
        stats = common.receiver_stats(pool, PORT)
    finally:
        common.stop_all(procs)

    check = json.loads(common.django(CHECK, env()).splitlines()[-1])
    # Steady state: the best 5-second window of the receiver's count while the writer was writing.
    window = [(t, n) for t, n in samples if t <= written]
    steady = max(
        ((n2 - n1) / (t2 - t1) for (t1, n1) in window for (t2, n2) in window if 4.5 <= t2 - t1 <= 5.5), default=0.0
    )
    overall = total / (last - first) if last else 0.0
    cpu, cpu_rows = common.cpu_table(cpu_before, cpu_after, stats["count"])
    busy = (machine_after[0] - machine_before[0]) / max(machine_after[1] - machine_before[1], 1e-9)
    ok = (
        check["runs"] == check["runs_completed"] == check["delivered"] == check["attempts"] == total
        and stats["count"] == stats["distinct"] == stats["valid"] == total
    )
    result = {
        "plain": plain,
        "steady": steady,
        "overall": overall,
        "offered": total / (written - first),
        "total": total,
        "delivered": stats["count"],
        "stats": stats,
        "check": check,
        "cpu": cpu,
        "cpu_rows": cpu_rows,
        "busy": busy,
        "ok": ok,
        "seconds": seconds,
        "rate": rate,
    }
    print(
        f"database path: offered {result['offered']:.0f}/s; steady {steady:.0f}/s; overall {overall:.0f}/s; "
        f"receiver {stats}; {check}",
        flush=True,
    )
    return result


def section(r: dict) -> str:
    check, stats = r["check"], r["stats"]
    return f"""
## Database path (`make bench-workflows`)

One run: a plain keep-alive POST loop (urllib3, one thread, webhook-sized body) to a local asyncio receiver,
then Rowbell end to end against the same receiver: a writer commits one-row INSERTs into the customer's
`orders` table at a steady offered rate ({r["offered"]:.0f}/s for {r["seconds"]} s, {r["total"]:,} row changes); each
is captured, picked up by the `listener`, runs a published workflow (database trigger, one webhook step) in a
`celery worker` with two processes, and is delivered signed. `beat` runs too.

| | webhooks/s | ratio to the plain loop |
|---|---|---|
| plain keep-alive POST loop | {r["plain"]:.0f} | 1.00 |
| Rowbell, steady (best 5 s window while writing) | **{r["steady"]:.0f}** | **{r["steady"] / r["plain"]:.2f}** |
| Rowbell, overall (first commit to last delivery) | {r["overall"]:.0f} | {r["overall"] / r["plain"]:.2f} |

Delivered {r["delivered"]:,} webhooks for {r["total"]:,} row changes (the receiver's count, 3 s after the last one;
{stats["distinct"]:,} distinct webhook-ids, {stats["valid"]:,} valid signatures); rows recorded: {check["runs"]:,} runs
({check["runs_completed"]:,} completed), {check["deliveries"]:,} deliveries ({check["delivered"]:,} delivered),
{check["attempts"]:,} attempts (at most {check["attempts_per_delivery_max"]} per delivery):
{"every webhook delivered once, signed, and every attempt recorded" if r["ok"] else "MISMATCH"}.
Targets: at least 1,000 webhooks/s and 40% of the plain loop.

CPU per delivered webhook, from the first commit to the last delivery, by process (ms; processes that ran
throughout: PostgreSQL's count leaves out the writer's sessions, which end with it). The machine's
{os.cpu_count()} cores were {r["busy"]:.0%} busy over that time.

| process | CPU ms / webhook |
|---|---|
{r["cpu_rows"]}

Command: `make bench-workflows` (runs `.venv/bin/python bench/bench_workflows.py --seconds {r["seconds"]} --rate
{r["rate"]}`).
"""


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=20, help="how long the writer writes")
    parser.add_argument(
        "--rate",
        type=int,
        default=3000,
        help="row changes committed per second (offered: more than Rowbell delivers, to measure its ceiling)",
    )
    parser.add_argument("--plain-seconds", type=int, default=5)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    result = database_path(seconds=args.seconds, rate=args.rate, plain_seconds=args.plain_seconds)
    text = section(result)
    print(text)
    if not args.no_write:
        section_write("bench-workflows", text)


if __name__ == "__main__":
    main()
