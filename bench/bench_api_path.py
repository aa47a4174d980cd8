"""Benchmark: the notification API's main road, trigger call to delivered signed webhook.

    make bench-api-path     (or: .venv/bin/python bench/bench_api_path.py --calls 20000)

1. A service database migrated from scratch, a product with its API key, a webhook endpoint pointing at a
   local asyncio receiver that checks every signature (bench/receiver.py), and a published workflow: API
   trigger, one webhook notify step.
2. The reference, in the same run: a plain keep-alive HTTP POST loop (urllib3, one thread) to the same
   receiver, with a webhook-sized body.
3. Rowbell's processes as the Procfile runs them, production settings: `web` (gunicorn, 4 sync workers),
   `dispatcher`, `worker` (two processes), `beat`, `listener`.
4. The load: wrk, 2 threads and 8 connections, `--calls` trigger calls of one recipient each, as fast as
   the web accepts them (offered faster than they can be delivered: the backlog waits in the database).
5. Accepted/s: the calls written, over the span of their `created_at`. Delivered/s: the calls over the
   time from the first call to the last webhook the receiver counted. Then every request, run,
   delivery and attempt row is checked, and the receiver's count of distinct webhook-ids and valid
   signatures.
6. The backlog run (api_drain): `--drain-calls` calls accepted while no dispatcher runs, then delivered:
   the delivery side's own rate, without the web's share of the two cores.
7. Then, unless `--no-database-path`, the database path (bench/bench_workflows.py) in the same run, for
   its ratio to its own plain loop beside this one's.
8. Figures and the command go to docs/benchmarks.md.

Databases and Redis: the servers of DATABASE_URL and REDIS_URL in the environment (bench/common.py).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import common  # noqa: E402
from bench.docs import section_write  # noqa: E402

SERVICE = "rowbell_bench_api_path"
REDIS_DB = 11
PORT = 8056  # the receiver
WEB_PORT = 8098
WEB_WORKERS = 4  # the Procfile's default WEB_CONCURRENCY
KEY = "Jw0d8mB2c5b4nS4Qm1o8yXqkB3cT6e0vH3uT8pL1aZk="  # fixed Fernet key, bench database only


def env() -> dict:
    return common.service_env(
        database=SERVICE,
        redis=common.redis_url(REDIS_DB),
        ROWBELL_ENCRYPTION_KEYS=KEY,
        ROWBELL_OUTBOUND_ALLOW="127.0.0.0/8",
        # Plain HTTP on loopback, as behind a proxy that terminates TLS (production redirects plain HTTP).
        DJANGO_SECURE_SSL_REDIRECT="false",
        # One key makes every call: its throttle counts each (a cost measured) but must refuse none.
        ROWBELL_TRIGGER_RATE="100000000/min",
    )


SETUP = f"""
import json
from apps.deliveries.services import webhook_endpoint_create
from apps.tenants.services import product_create
from apps.workflows.services import workflow_create, workflow_publish
product, key = product_create(name="Bench", actor="bench")
hook = webhook_endpoint_create(product=product, url="http://127.0.0.1:{PORT}/hook", actor="bench")
wf = workflow_create(product=product, key="bench", actor="bench", definition={{"trigger": {{"type": "api"}},
     "steps": [{{"type": "notify", "channel": "webhook", "webhook": str(hook.id)}}]}})
workflow_publish(workflow=wf, actor="bench")
print(json.dumps({{"key": key, "secret": hook.secret}}))
"""

# Each wrk thread makes `quota` calls (distinct recipients), then stops; the bench ends wrk with SIGINT
# once every call is written.
LUA = """
local counter, answered, quota = 0, 0, 0
local made = 0
function setup(thread)
  made = made + 1
  thread:set("tid", made)
end
function init(args)
  quota = tonumber(args[1])
end
request = function()
  counter = counter + 1
  local body = '{"workflow":"bench","to":[{"id":"user-' .. tid .. '-' .. counter .. '"}],"data":{"order":' ..
               counter .. '},"priority":"normal"}'
  return wrk.format("POST", "/api/v1/trigger", {["Content-Type"]="application/json",
                    ["Authorization"]="Api-Key %s"}, body)
end
response = function(status, headers, body)
  answered = answered + 1
  if answered >= quota then wrk.thread:stop() end
end
done = function(summary, latency, requests)
  io.write(string.format("JSON {\\"requests\\": %%d, \\"errors\\": %%d, \\"non2xx\\": %%d}\\n", summary.requests,
           summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
           summary.errors.status))
end
"""

CHECK = """
import json
from django.db.models import Count, Max, Min
from apps.deliveries.models import Delivery, DeliveryAttempt
from apps.runs.models import Run, TriggerRequest
span = TriggerRequest.objects.aggregate(first=Min("created_at"), last=Max("created_at"))
print(json.dumps({
    "requests": TriggerRequest.objects.count(),
    "requests_started": TriggerRequest.objects.filter(status="started").count(),
    "first_call": span["first"].timestamp(), "last_call": span["last"].timestamp(),
    "runs": Run.objects.count(),
    "runs_completed": Run.objects.filter(status="completed").count(),
    "deliveries": Delivery.objects.count(),
    "delivered": Delivery.objects.filter(status="delivered").count(),
    "attempts": DeliveryAttempt.objects.count(),
    "attempts_per_delivery_max": max([a["n"] for a in DeliveryAttempt.objects.values("delivery_id")
                                      .annotate(n=Count("id")).order_by("-n")[:1]] or [0]),
}))
"""


def written() -> int:
    return int(common.psql(SERVICE, "SELECT count(*) FROM runs_triggerrequest"))


def _web_start():
    """gunicorn as the Procfile runs it, answering /ping."""
    return common.web_start("web", port=WEB_PORT, workers=WEB_WORKERS, env=env())


def _calls_make(key: str, *, calls: int, threads: int, connections: int, each=None) -> tuple[dict, dict]:
    """wrk making `calls` trigger calls (each thread its share), until all are written, calling `each()` every
    0.25 s meanwhile: (wrk's summary, wrk's CPU as common.cpu_by_process gives it)."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(LUA % key)
    load = subprocess.Popen(
        [
            "wrk",
            f"-t{threads}",
            f"-c{connections}",
            "-d3600s",
            "-s",
            script.name,
            f"http://127.0.0.1:{WEB_PORT}/api/v1/trigger",
            "--",
            str(calls // threads),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and written() < calls // threads * threads:
        if each is not None:
            each()
        time.sleep(0.25)
    wrk_cpu = common.cpu_by_process({}, extra={load.pid: "load (wrk)"})  # its threads have stopped
    load.send_signal(signal.SIGINT)
    out = load.communicate(timeout=60)[0]
    os.unlink(script.name)
    return json.loads(next(line for line in out.splitlines() if line.startswith("JSON "))[5:]), wrk_cpu


def api_path(*, calls: int, threads: int, connections: int, plain_seconds: int) -> dict:
    import urllib3

    common.databases_recreate(SERVICE)
    common.redis_flush(common.redis_url(REDIS_DB))
    common.migrate(env())
    setup = json.loads(common.django(SETUP, env()).splitlines()[-1])

    procs: dict = {}
    common.receiver_start(procs, PORT, secret=setup["secret"])
    pool = urllib3.PoolManager()
    try:
        plain = common.plain_loop(PORT, plain_seconds)
        print(f"plain keep-alive POST loop: {plain:.0f}/s", flush=True)

        procs["web"] = _web_start()
        procs["dispatcher"] = common.start("dispatcher", [sys.executable, "manage.py", "run_dispatcher"], env())
        common.workers_start(procs, env())
        time.sleep(6)  # workers ready, first beat ticks done

        cpu_before, machine_before = common.cpu_by_process(procs), common.machine_busy()
        began = time.time()
        samples = []  # (time, delivered so far)
        wrk, wrk_cpu = _calls_make(
            setup["key"],
            calls=calls,
            threads=threads,
            connections=connections,
            each=lambda: samples.append((time.time(), common.receiver_stats(pool, PORT)["count"])),
        )
        calls_done = time.time()
        total = written()
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            stats = common.receiver_stats(pool, PORT)
            samples.append((time.time(), stats["count"]))
            if stats["count"] >= total:
                break
            time.sleep(0.2)
        cpu_after, machine_after = common.cpu_by_process(procs) | wrk_cpu, common.machine_busy()
        time.sleep(3)  # anything sent twice would arrive now
        stats = common.receiver_stats(pool, PORT)
    finally:
        common.stop_all(procs)

    check = json.loads(common.django(CHECK, env()).splitlines()[-1])
    last = stats["last_at"] if stats["count"] >= total else None
    accepted = total / max(check["last_call"] - check["first_call"], 1e-9)
    delivered = total / (last - began) if last else 0.0
    window = [(t, n) for t, n in samples if t <= calls_done]
    steady = max(
        ((n2 - n1) / (t2 - t1) for (t1, n1) in window for (t2, n2) in window if 4.5 <= t2 - t1 <= 5.5), default=0.0
    )
    cpu, cpu_rows = common.cpu_table(cpu_before, cpu_after, stats["count"])
    busy = (machine_after[0] - machine_before[0]) / max(machine_after[1] - machine_before[1], 1e-9)
    ok = (
        check["requests"]
        == check["requests_started"]
        == check["runs"]
        == check["runs_completed"]
        == check["delivered"]
        == check["attempts"]
        == total
        and stats["count"] == stats["distinct"] == stats["valid"] == total
        and not stats["invalid"]
    )
    result = {
        "plain": plain,
        "accepted": accepted,
        "delivered_rate": delivered,
        "steady": steady,
        "total": total,
        "calls_seconds": check["last_call"] - check["first_call"],
        "delivery_seconds": (last or 0) - began,
        "stats": stats,
        "check": check,
        "wrk": wrk,
        "cpu": cpu,
        "cpu_rows": cpu_rows,
        "busy": busy,
        "ok": ok,
        "threads": threads,
        "connections": connections,
        "calls": calls,
    }
    print(
        f"API path: accepted {accepted:.0f}/s; delivered {delivered:.0f}/s (steady {steady:.0f}/s); "
        f"receiver {stats}; {check}; wrk {wrk}",
        flush=True,
    )
    return result


def api_drain(*, calls: int, threads: int, connections: int) -> dict:
    """The delivery side's capacity on the API path, the figure to hold beside the database path's.

    The worker, beat and the listener are started and warm; `calls` trigger calls are accepted by the web
    while no dispatcher runs (so nothing is hinted and nothing delivers); then the web stops and the
    dispatcher starts. Webhooks/s from the first delivered to the last, and the CPU per webhook of each
    process, with every row checked as in the black-box run. Keep the calls few enough to be accepted
    within ROWBELL_REQUEUE_AFTER_SECONDS, or the reconciler hints some of them early.
    """
    import urllib3

    common.databases_recreate(SERVICE)
    common.redis_flush(common.redis_url(REDIS_DB))
    common.migrate(env())
    setup = json.loads(common.django(SETUP, env()).splitlines()[-1])
    procs: dict = {}
    common.receiver_start(procs, PORT, secret=setup["secret"])
    pool = urllib3.PoolManager()
    try:
        common.workers_start(procs, env())
        web = {"web": _web_start()}
        _calls_make(setup["key"], calls=calls, threads=threads, connections=connections)
        common.stop_all(web)
        total = written()
        procs["dispatcher"] = common.start("dispatcher", [sys.executable, "manage.py", "run_dispatcher"], env())
        cpu_before, machine_before = common.cpu_by_process(procs), common.machine_busy()
        first = None
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            count = common.receiver_stats(pool, PORT)["count"]
            if count and first is None:
                first = (time.time(), count)
            if count >= total:
                break
            time.sleep(0.05)
        cpu_after, machine_after = common.cpu_by_process(procs), common.machine_busy()
        time.sleep(3)  # anything sent twice would arrive now
        stats = common.receiver_stats(pool, PORT)
    finally:
        common.stop_all(procs)
    check = json.loads(common.django(CHECK, env()).splitlines()[-1])
    done = stats["count"] >= total and first is not None
    rate = (total - first[1]) / max(stats["last_at"] - first[0], 1e-9) if done else 0.0
    cpu, cpu_rows = common.cpu_table(cpu_before, cpu_after, stats["count"])
    busy = (machine_after[0] - machine_before[0]) / max(machine_after[1] - machine_before[1], 1e-9)
    ok = (
        check["requests"]
        == check["requests_started"]
        == check["runs"]
        == check["runs_completed"]
        == check["delivered"]
        == check["attempts"]
        == total
        and stats["count"] == stats["distinct"] == stats["valid"] == total
        and not stats["invalid"]
    )
    print(f"API path, backlog drained: {rate:.0f}/s; receiver {stats}; {check}", flush=True)
    return {"rate": rate, "total": total, "cpu_rows": cpu_rows, "busy": busy, "ok": ok}


def section(r: dict, drain: dict, db: dict | None, command: str) -> str:
    check, stats = r["check"], r["stats"]
    ratio = r["delivered_rate"] / r["plain"]
    drain_ratio = drain["rate"] / r["plain"]
    db_rows = db_check = ""
    verdict = (
        f"Targets: at least 1,000 delivered/s: black box **{'met' if r['delivered_rate'] >= 1000 else 'not met'}**"
        f" ({r['delivered_rate']:.0f}/s), backlog **{'met' if drain['rate'] >= 1000 else 'not met'}**"
        f" ({drain['rate']:.0f}/s)"
    )
    if db:
        db_ratio = db["overall"] / db["plain"]
        db_rows = (
            f"| database path (`make bench-workflows`), same run: row change to webhook, overall | "
            f"{db['overall']:.0f} | {db_ratio:.2f} (its own plain loop: {db['plain']:.0f}/s) |\n"
            f"| database path, steady (best 5 s window while writing) | {db['steady']:.0f} | "
            f"{db['steady'] / db['plain']:.2f} |\n"
        )
        verdict += (
            f"; at least the database path's ratio ({db_ratio:.2f}): black box "
            f"**{'met' if ratio >= db_ratio else 'not met'}** ({ratio:.2f}), backlog "
            f"**{'met' if drain_ratio >= db_ratio else 'not met'}** ({drain_ratio:.2f})"
        )
        db_check = (
            f" The database path's run: {db['total']:,} row changes, {db['delivered']:,} webhooks, "
            f"{'every one delivered once and recorded' if db['ok'] else 'MISMATCH'}."
        )
    return f"""
## API path (`make bench-api-path`)

One run: a plain keep-alive POST loop (urllib3, one thread, webhook-sized body) to a local asyncio receiver
that checks every signature, then two measurements of `POST /api/v1/trigger`, one recipient each, to a
published workflow with one webhook step, through Rowbell's processes as the Procfile runs them with
production settings (gunicorn with {WEB_WORKERS} sync workers, the dispatcher, a `celery worker` with two
processes, beat, the listener), to webhooks delivered signed to the same receiver. Calls are made by wrk
({r["threads"]} threads, {r["connections"]} connections) as fast as the web accepts them.

- **Black box**: {r["total"]:,} calls while every process runs; from the first call to the last webhook.
- **Backlog**: {drain["total"]:,} calls accepted while no dispatcher runs (nothing delivers); then the web stops
  and the dispatcher starts; from the first webhook to the last. The delivery side's own rate, the figure
  that compares with the database path, whose writer costs far less than an HTTP call.

| | per second | ratio to the plain loop |
|---|---|---|
| plain keep-alive POST loop | {r["plain"]:.0f} | 1.00 |
| black box: trigger calls accepted (written, first to last) | {r["accepted"]:.0f} | {r["accepted"] / r["plain"]:.2f} |
| **black box: webhooks delivered, first call to last webhook** | **{r["delivered_rate"]:.0f}** | **{ratio:.2f}** |
| black box: webhooks delivered, steady (best 5 s window while calling) | {r["steady"]:.0f} | {r["steady"] / r["plain"]:.2f} |
| **backlog: webhooks delivered, first to last** | **{drain["rate"]:.0f}** | **{drain_ratio:.2f}** |
{db_rows}
Black box: the calls took {r["calls_seconds"]:.1f} s and the last webhook arrived {r["delivery_seconds"]:.1f} s
after the first call. Receiver: {stats["count"]:,} webhooks, {stats["distinct"]:,} distinct webhook-ids,
{stats["valid"]:,} valid signatures, {stats["invalid"]} invalid. Rows: {check["requests"]:,} requests
({check["requests_started"]:,} started), {check["runs"]:,} runs ({check["runs_completed"]:,} completed),
{check["deliveries"]:,} deliveries ({check["delivered"]:,} delivered), {check["attempts"]:,} attempts (at most
{check["attempts_per_delivery_max"]} per delivery); wrk: {r["wrk"]["requests"]:,} answers, {r["wrk"]["errors"]}
errors, {r["wrk"]["non2xx"]} non-2xx: {"every call delivered once, signed, and recorded" if r["ok"] else "MISMATCH"}.
Backlog: {"every call delivered once, signed, and recorded" if drain["ok"] else "MISMATCH"}.{db_check}
{verdict}.

CPU per delivered webhook by process (ms), and how busy the machine's {os.cpu_count()} cores were:

| process | black box ({r["busy"]:.0%} busy) |
|---|---|
{r["cpu_rows"]}

| process | backlog ({drain["busy"]:.0%} busy) |
|---|---|
{drain["cpu_rows"]}

Command: `make bench-api-path` (runs `{command}`).
"""


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--plain-seconds", type=int, default=5)
    parser.add_argument("--database-seconds", type=int, default=20, help="the database path's writer (seconds)")
    parser.add_argument("--database-rate", type=int, default=1500, help="the database path's offered rate")
    parser.add_argument("--drain-calls", type=int, default=10_000, help="calls accepted before delivery starts")
    parser.add_argument("--no-database-path", action="store_true")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    result = api_path(
        calls=args.calls, threads=args.threads, connections=args.connections, plain_seconds=args.plain_seconds
    )
    drain = api_drain(calls=args.drain_calls, threads=args.threads, connections=args.connections)
    db = None
    if not args.no_database_path:
        from bench.bench_workflows import database_path

        db = database_path(seconds=args.database_seconds, rate=args.database_rate, plain_seconds=args.plain_seconds)
    command = (
        f".venv/bin/python bench/bench_api_path.py --calls {args.calls} --threads {args.threads} "
        f"--connections {args.connections} --drain-calls {args.drain_calls} --database-seconds {args.database_seconds} "
        f"--database-rate {args.database_rate}"
    )
    text = section(result, drain, db, command)
    print(text)
    if not args.no_write:
        section_write("bench-api-path", text)


if __name__ == "__main__":
    main()
