"""Benchmark: one bulk UPDATE to one delivered signed webhook per row (a run per row).

    make bench-bulk-update     (or: .venv/bin/python bench/bench_bulk_update.py --rows 10000)

1. A customer database with an `orders` table holding `--rows` rows, a service database migrated from scratch,
   a product with a connection, a webhook endpoint pointing at a local asyncio receiver that checks every
   signature (bench/receiver.py), and a published workflow: database trigger on `row.updated` with the default
   `for_each: row`, one webhook notify step.
2. The reference, in the same run: a plain keep-alive HTTP POST loop (urllib3, one thread) to the same
   receiver, with a body of the same size.
3. Rowbell's processes as deployed: one `celery worker` with two processes, the `listener`, `beat`.
   One statement, `UPDATE public.orders SET status = 'paid'`, changes every row: one event, picked up, a run
   per row written in bulk, each delivered as its own webhook.
4. Webhooks/s from the UPDATE's start to the last webhook the receiver counted. Then every run, delivery and
   attempt row is checked, and the receiver's count of distinct webhook-ids and valid signatures.
5. Figures and the command go to docs/benchmarks.md.

Databases and Redis: the servers of DATABASE_URL and REDIS_URL in the environment (bench/common.py).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import bench_workflows, common  # noqa: E402
from bench.bench_workflows import CHECK  # noqa: E402
from bench.docs import section_write  # noqa: E402

SERVICE = "rowbell_bench_bulk"
CUSTOMER = "rowbell_bench_bulk_customer"
REDIS_DB = 10
PORT = 8057


def env() -> dict:
    return bench_workflows.env(database=SERVICE, redis_db=REDIS_DB)


def setup_code() -> str:
    return bench_workflows.setup_code(customer=CUSTOMER, port=PORT, key="order-paid", event="row.updated")


def bulk_update(*, rows: int, plain_seconds: int = 5) -> dict:
    """One run (see the module): the plain loop, then one UPDATE of `rows` rows end to end. Returns the
    figures: plain, rate (webhooks/s), seconds, total, stats, check, cpu_rows, busy, ok."""
    import urllib3

    common.databases_recreate(SERVICE, CUSTOMER)
    common.psql(
        CUSTOMER,
        "CREATE TABLE public.orders (id bigserial PRIMARY KEY, status text NOT NULL, total numeric(12, 2)); "
        f"INSERT INTO public.orders (status, total) SELECT 'new', g FROM generate_series(1, {rows}) g",
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
        common.workers_start(procs, env())
        time.sleep(6)  # workers ready, first beat ticks done

        cpu_before, machine_before = common.cpu_by_process(procs), common.machine_busy()
        began = time.time()
        common.psql(CUSTOMER, "UPDATE public.orders SET status = 'paid'")
        committed = time.time()
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if common.receiver_stats(pool, PORT)["count"] >= rows:
                break
            time.sleep(0.1)
        cpu_after, machine_after = common.cpu_by_process(procs), common.machine_busy()
        time.sleep(3)  # anything sent twice would arrive now
        stats = common.receiver_stats(pool, PORT)
    finally:
        common.stop_all(procs)

    check = json.loads(common.django(CHECK, env()).splitlines()[-1])
    done = stats["count"] >= rows
    seconds = stats["last_at"] - began if done else 0.0
    rate = rows / seconds if done else 0.0
    cpu, cpu_rows = common.cpu_table(cpu_before, cpu_after, stats["count"])
    busy = (machine_after[0] - machine_before[0]) / max(machine_after[1] - machine_before[1], 1e-9)
    ok = (
        check["runs"] == check["runs_completed"] == check["delivered"] == check["attempts"] == rows
        and stats["count"] == stats["distinct"] == stats["valid"] == rows
        and not stats["invalid"]
    )
    print(f"bulk update: {rows} rows, {rate:.0f} webhooks/s; receiver {stats}; {check}", flush=True)
    return {
        "plain": plain,
        "rate": rate,
        "seconds": seconds,
        "update_seconds": committed - began,
        "total": rows,
        "stats": stats,
        "check": check,
        "cpu_rows": cpu_rows,
        "busy": busy,
        "ok": ok,
    }


def section(r: dict) -> str:
    check, stats = r["check"], r["stats"]
    met = r["rate"] >= 1000
    return f"""
## One bulk UPDATE, a run per row (`make bench-bulk-update`)

One run: a plain keep-alive POST loop (urllib3, one thread, webhook-sized body) to a local asyncio receiver
that checks every signature, then one statement, `UPDATE public.orders SET status = 'paid'`, over
{r["total"]:,} rows of the customer's `orders` table. A published workflow (database trigger on `row.updated`,
`for_each: row`, one webhook step) runs once per row: the event is captured, picked up by the `listener`,
which writes {r["total"]:,} runs in bulk; a `celery worker` with two processes runs them and delivers each as its
own signed webhook. `beat` runs too.

| | webhooks/s | ratio to the plain loop |
|---|---|---|
| plain keep-alive POST loop | {r["plain"]:.0f} | 1.00 |
| **one UPDATE to its last webhook** | **{r["rate"]:.0f}** | **{r["rate"] / r["plain"]:.2f}** |

The UPDATE took {r["update_seconds"]:.2f} s (trigger included); the last webhook arrived {r["seconds"]:.1f} s after
it began. Receiver: {stats["count"]:,} webhooks, {stats["distinct"]:,} distinct webhook-ids, {stats["valid"]:,} valid
signatures, {stats["invalid"]} invalid. Rows: {check["runs"]:,} runs ({check["runs_completed"]:,} completed),
{check["deliveries"]:,} deliveries ({check["delivered"]:,} delivered), {check["attempts"]:,} attempts (at most
{check["attempts_per_delivery_max"]} per delivery):
{"every row delivered once, signed, and recorded" if r["ok"] else "MISMATCH"}.
Target: at least 1,000 webhooks/s (**{"met" if met else "not met"}**).

CPU per delivered webhook by process (ms). The machine's {os.cpu_count()} cores were {r["busy"]:.0%} busy.

| process | CPU ms / webhook |
|---|---|
{r["cpu_rows"]}

Command: `make bench-bulk-update` (runs `.venv/bin/python bench/bench_bulk_update.py --rows {r["total"]}`).
"""


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=10_000, help="rows the one UPDATE changes")
    parser.add_argument("--plain-seconds", type=int, default=5)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    result = bulk_update(rows=args.rows, plain_seconds=args.plain_seconds)
    text = section(result)
    print(text)
    if not args.no_write:
        section_write("bench-bulk-update", text)


if __name__ == "__main__":
    main()
