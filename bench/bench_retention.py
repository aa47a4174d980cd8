"""Benchmark: Rowbell's own tables stay bounded under sustained load when retention is on.

    make bench-retention     (or: .venv/bin/python bench/bench_retention.py --seconds 360 --rate 150)

Each phase starts from a service database migrated from scratch, with a product, its API key, a webhook
endpoint pointing at a local asyncio receiver that checks every signature (bench/receiver.py) and a published
workflow (API trigger, one webhook notify step), as bench/bench_api_path.py makes them. Then:

1. Rowbell's processes as the Procfile runs them, production settings: `web` (gunicorn, 4 sync workers),
   `dispatcher`, `worker` (two processes), `beat`, `listener`.
2. The load: paced `POST /api/v1/trigger` calls, one recipient each, `--rate` per second for `--seconds`
   (`--threads` threads on a shared schedule: a late call goes out at once, so the offered rate holds while the
   web keeps up).
3. Every `--sample` seconds: `pg_total_relation_size` (heap, indexes and TOAST, bytes) of each of Rowbell's main
   tables (TABLES), their row counts, the database's size, the rows retention has deleted so far (the
   `rowbell_retention_deleted_rows_total` counter rows in core_metriccounter) and the webhooks delivered.
4. Vacuum: PostgreSQL reuses the space of deleted rows only once VACUUM has marked it free. With the server's
   `autovacuum` on, the bench leaves it to autovacuum; with it off (a development server), the bench stands in
   for it, running `VACUUM (ANALYZE)` on TABLES every `--vacuum-interval` seconds (60 by default, autovacuum's
   default naptime).

The phases (`--phases`), one after the other in the same run:

- `on`: retention at `--retention-seconds` (ROWBELL_RETENTION_DAYS as a fraction of a day) for finished work and
  `--audit-retention-seconds` for the audit trail, pruned every `--interval` seconds (ROWBELL_RETENTION_INTERVAL);
- `off`: the defaults (30 days, audit 365 days, every 60 s): nothing in the run is old enough to delete;
- `unvacuumed`: as `on`, without the bench's VACUUM (what retention alone does when nothing vacuums).

At the end of a phase, once every call is delivered: `GET /metrics` (ROWBELL_METRICS_TOKEN set) is read for
the same counter, and every call's run and request is checked to be either still in the database or counted as
deleted. Figures and the command go to docs/benchmarks.md.

Databases and Redis: the servers of DATABASE_URL and REDIS_URL in the environment (bench/common.py).
"""

from __future__ import annotations

import argparse
import itertools
import json
import re
import sys
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import common  # noqa: E402
from bench.bench_api_path import SETUP  # noqa: E402
from bench.docs import section_write  # noqa: E402

SERVICE = "rowbell_bench_retention"
REDIS_DB = 13
PORT = 8058  # the receiver (the SETUP code below points the endpoint here)
WEB_PORT = 8099
WEB_WORKERS = 4  # the Procfile's default WEB_CONCURRENCY
KEY = "t0jYbC3nV5qL8wR2eK6mA9sD1fG4hJ7kZxPuQyTiWoE="  # fixed Fernet key, bench database only
METRICS_TOKEN = "bench-retention-metrics"
DELETED = "rowbell_retention_deleted_rows_total"
DAY = 86400.0
MB = 1024 * 1024

TABLES = (
    "runs_triggerrequest",
    "runs_run",
    "runs_runstep",
    "deliveries_delivery",
    "deliveries_deliveryattempt",
    "deliveries_deliveryevent",
    "audit_auditevent",
    "connections_event",
    "core_queuedaction",
)

SAMPLE_SQL = f"""
SELECT json_build_object(
  'sizes', json_build_object({", ".join(f"'{t}', pg_total_relation_size('{t}')" for t in TABLES)}),
  'rows', json_build_object({", ".join(f"'{t}', (SELECT count(*) FROM {t})" for t in TABLES)}),
  'database', pg_database_size(current_database()),
  'deleted', (SELECT coalesce(json_object_agg(labels, v), '{{}}')
              FROM (SELECT labels, sum(value) AS v FROM core_metriccounter WHERE name = '{DELETED}'
                    GROUP BY labels) c))
"""

STATS_SQL = f"""
SELECT coalesce(json_object_agg(relname, json_build_object('dead', n_dead_tup, 'live', n_live_tup,
       'vacuums', vacuum_count, 'autovacuums', autovacuum_count)), '{{}}')
FROM pg_stat_user_tables WHERE relname IN ({", ".join(f"'{t}'" for t in TABLES)})
"""

_TABLE_LABEL = re.compile(r'table="([^"]*)"')


def env(phase: str, args) -> dict:
    """Production settings on the bench's own database; retention as `phase` wants it."""
    if phase == "off":
        retention = {"ROWBELL_RETENTION_DAYS": "30", "ROWBELL_AUDIT_RETENTION_DAYS": "365"}
        retention["ROWBELL_RETENTION_INTERVAL"] = "60"
    else:
        retention = {
            "ROWBELL_RETENTION_DAYS": repr(args.retention_seconds / DAY),
            "ROWBELL_AUDIT_RETENTION_DAYS": repr(args.audit_retention_seconds / DAY),
            "ROWBELL_RETENTION_INTERVAL": str(args.interval),
        }
    return common.service_env(
        database=SERVICE,
        redis=common.redis_url(REDIS_DB),
        ROWBELL_ENCRYPTION_KEYS=KEY,
        ROWBELL_OUTBOUND_ALLOW="127.0.0.0/8",
        # Plain HTTP on loopback, as behind a proxy that terminates TLS (production redirects plain HTTP).
        DJANGO_SECURE_SSL_REDIRECT="false",
        # One key makes every call: its throttle counts each but must refuse none.
        ROWBELL_TRIGGER_RATE="100000000/min",
        ROWBELL_METRICS_TOKEN=METRICS_TOKEN,
        **retention,
    )


def autovacuum_on() -> bool:
    return common.psql("postgres", "SHOW autovacuum") == "on"


def sample() -> dict:
    """One reading of the service database: sizes (bytes per table), rows (per table), database (bytes),
    deleted (rows retention deleted so far, per table)."""
    raw = json.loads(common.psql(SERVICE, SAMPLE_SQL))
    raw["deleted"] = {
        (_TABLE_LABEL.search(labels) or [None, labels])[1]: int(v) for labels, v in raw["deleted"].items()
    }
    return raw


def _web_start(environment: dict):
    return common.web_start("retention-web", port=WEB_PORT, workers=WEB_WORKERS, env=environment)


class Load:
    """Paced trigger calls: call k is due at start + k / rate; `threads` threads take the next due call."""

    def __init__(self, key: str, *, rate: float, seconds: float, threads: int):
        self.key, self.rate, self.seconds = key, rate, seconds
        self.counter = itertools.count()
        self.counts = [{"accepted": 0, "refused": 0, "errors": 0} for _ in range(threads)]
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(threads)]

    def start(self) -> None:
        self.began = time.monotonic()
        for thread in self.threads:
            thread.start()

    def join(self) -> None:
        for thread in self.threads:
            thread.join()
        self.ended = time.monotonic()

    def totals(self) -> dict:
        return {k: sum(c[k] for c in self.counts) for k in ("accepted", "refused", "errors")}

    def _run(self, i: int) -> None:
        import urllib3

        pool = urllib3.HTTPConnectionPool("127.0.0.1", WEB_PORT, maxsize=1, retries=False, timeout=30)
        headers = {"Content-Type": "application/json", "Authorization": f"Api-Key {self.key}"}
        counts = self.counts[i]
        while True:
            k = next(self.counter)
            due = self.began + k / self.rate
            if due - self.began >= self.seconds:
                return
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            body = json.dumps(
                {"workflow": "bench", "to": [{"id": f"user-{k}"}], "data": {"order": k}, "priority": "normal"}
            )
            try:
                response = pool.urlopen("POST", "/api/v1/trigger", body=body, headers=headers)
                counts["accepted" if response.status == 202 else "refused"] += 1
            except Exception:  # noqa: BLE001 - counted, reported
                counts["errors"] += 1


def _vacuum_loop(every: float, stop: threading.Event, runs: list) -> None:
    """VACUUM (ANALYZE) of TABLES every `every` seconds until `stop`; appends each one's duration (s) to `runs`."""
    while not stop.wait(every):
        began = time.monotonic()
        common.psql(SERVICE, f"VACUUM (ANALYZE) {', '.join(TABLES)}")
        runs.append(time.monotonic() - began)


def _metrics_deleted() -> dict[str, int]:
    """rowbell_retention_deleted_rows_total by table, as GET /metrics exposes it."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{WEB_PORT}/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}
    )
    text = urllib.request.urlopen(request, timeout=10).read().decode()
    out = {}
    for line in text.splitlines():
        if line.startswith(DELETED + "{"):
            labels, _, value = line.rpartition(" ")
            table = _TABLE_LABEL.search(labels)
            if table:
                out[table[1]] = int(float(value))
    return out


def phase_run(phase: str, args, *, vacuum_every: float) -> dict:
    """One phase (see the module). Returns: samples [(seconds since the load began, sample())], load (accepted,
    refused, errors), offered (calls/s), stats (the receiver's), delivered_at (s), metrics_deleted, final
    (sample after delivery), pg_stats, vacuums (durations, s), busy (share of the machine), ok."""
    import urllib3

    environment = env(phase, args)
    common.databases_recreate(SERVICE)
    common.redis_flush(common.redis_url(REDIS_DB))
    common.migrate(environment)
    setup = json.loads(common.django(SETUP.replace(":8056/", f":{PORT}/"), environment).splitlines()[-1])

    procs: dict = {}
    common.receiver_start(procs, PORT, secret=setup["secret"])
    pool = urllib3.PoolManager()
    stop = threading.Event()
    vacuums: list[float] = []
    try:
        procs["web"] = _web_start(environment)
        procs["dispatcher"] = common.start(
            "retention-dispatcher", [sys.executable, "manage.py", "run_dispatcher"], environment
        )
        common.workers_start(procs, environment)
        time.sleep(6)  # workers ready, first beat ticks done

        vacuum = None
        if vacuum_every > 0:
            vacuum = threading.Thread(target=_vacuum_loop, args=(vacuum_every, stop, vacuums), daemon=True)
        load = Load(setup["key"], rate=args.rate, seconds=args.seconds, threads=args.threads)
        machine_before = common.machine_busy()
        load.start()
        if vacuum:
            vacuum.start()
        samples = [(0.0, sample(), 0, 0)]
        while any(t.is_alive() for t in load.threads):
            time.sleep(max(0.0, args.sample - (time.monotonic() - load.began) % args.sample))
            if any(t.is_alive() for t in load.threads):
                now = time.monotonic() - load.began
                samples.append((now, sample(), common.receiver_stats(pool, PORT)["count"], load.totals()["accepted"]))
                print(f"[{phase}] {_line(samples[-1])}", flush=True)
        load.join()
        calls = load.totals()
        samples.append(
            (load.ended - load.began, sample(), common.receiver_stats(pool, PORT)["count"], calls["accepted"])
        )
        print(f"[{phase}] end of load: {_line(samples[-1])}", flush=True)
        machine_after = common.machine_busy()
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and common.receiver_stats(pool, PORT)["count"] < calls["accepted"]:
            time.sleep(0.5)
        delivered_at = time.monotonic() - load.began
        time.sleep(3)  # anything sent twice would arrive now
        stats = common.receiver_stats(pool, PORT)
        stop.set()
        if vacuum:
            vacuum.join()
        final = sample()
        metrics_deleted = _metrics_deleted()
        pg_stats = json.loads(common.psql(SERVICE, STATS_SQL))
    finally:
        stop.set()
        common.stop_all(procs)

    accepted = calls["accepted"]
    deleted = final["deleted"]
    kept_or_deleted = {
        t: final["rows"][t] + deleted.get(t, 0) for t in ("runs_triggerrequest", "runs_run", "deliveries_delivery")
    }
    ok = (
        stats["count"] == stats["distinct"] == stats["valid"] == accepted
        and not stats["invalid"]
        and not calls["refused"]
        and not calls["errors"]
        and all(n == accepted for n in kept_or_deleted.values())
        and metrics_deleted == {t: n for t, n in deleted.items() if n}
    )
    result = {
        "phase": phase,
        "samples": samples,
        "load": calls,
        "offered": (accepted + calls["refused"] + calls["errors"]) / (load.ended - load.began),
        "stats": stats,
        "delivered_at": delivered_at,
        "load_seconds": load.ended - load.began,
        "metrics_deleted": metrics_deleted,
        "kept_or_deleted": kept_or_deleted,
        "final": final,
        "pg_stats": pg_stats,
        "vacuums": vacuums,
        "vacuum_every": vacuum_every,
        "busy": (machine_after[0] - machine_before[0]) / max(machine_after[1] - machine_before[1], 1e-9),
        "ok": ok,
    }
    print(
        f"[{phase}] calls {calls}; receiver {stats}; deleted {deleted}; /metrics {metrics_deleted}; "
        f"kept or deleted {kept_or_deleted}; vacuums {len(vacuums)}; ok {ok}",
        flush=True,
    )
    return result


def _total(s: dict) -> int:
    return sum(s["sizes"].values())


def _line(point) -> str:
    t, s, delivered, accepted = point
    return (
        f"t={t:5.0f}s calls={accepted} delivered={delivered} tables={_total(s) / MB:.1f} MB "
        f"db={s['database'] / MB:.1f} MB runs={s['rows']['runs_run']} audit={s['rows']['audit_auditevent']} "
        f"deleted={sum(s['deleted'].values())}"
    )


def summary(r: dict, warmup: float) -> dict:
    """Sizes in MB: at warm-up (the first sample at or after `warmup` s), at the end of the load, the largest
    after warm-up and over the whole load; growth from warm-up to the end (MB, and MB per minute by least
    squares over the samples after warm-up); rows at the end; bytes per call (end of load)."""
    during = r["samples"]
    after = [p for p in during if p[0] >= warmup] or during[-1:]
    at_warmup, end = after[0], during[-1]
    xs = [p[0] / 60 for p in after]
    ys = [_total(p[1]) / MB for p in after]
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    var = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / var if var else 0.0
    return {
        "warmup_t": at_warmup[0],
        "warmup_mb": _total(at_warmup[1]) / MB,
        "end_mb": _total(end[1]) / MB,
        "max_after_mb": max(ys),
        "max_mb": max(_total(p[1]) / MB for p in during),
        "growth_mb": (_total(end[1]) - _total(at_warmup[1])) / MB,
        "slope": slope,
        "db_end_mb": end[1]["database"] / MB,
        "rows_end": sum(end[1]["rows"].values()),
        "bytes_per_call": _total(end[1]) / max(end[3], 1),
    }


NAMES = {"on": "retention on", "off": "retention off", "unvacuumed": "retention on, no VACUUM"}


def section(results: list[dict], args, command: str, autovacuum: bool) -> str:
    sums = {r["phase"]: summary(r, args.warmup) for r in results}
    vacuum_note = (
        "The server's `autovacuum` is on: the phases leave vacuuming to it."
        if autovacuum
        else f"The server's `autovacuum` is **off** (a development setting), so the bench stands in for it: "
        f"`VACUUM (ANALYZE)` of the tables below every {args.vacuum_interval:g} s (autovacuum's default "
        f"naptime is 60 s) in the `on` and `off` phases; the `unvacuumed` phase runs none, to show what retention "
        f"alone does."
    )
    rows = []
    for r in results:
        s, load, stats = sums[r["phase"]], r["load"], r["stats"]
        deleted = sum(r["final"]["deleted"].values())
        rows.append(
            f"| {NAMES[r['phase']]} | {load['accepted']:,} ({r['offered']:.0f}/s) | {stats['count']:,} | "
            f"{s['warmup_mb']:.1f} | **{s['end_mb']:.1f}** | {s['max_after_mb']:.1f} | "
            f"{s['growth_mb']:+.1f} ({s['slope']:+.2f}/min) | {s['rows_end']:,} | {deleted:,} | "
            f"{len(r['vacuums'])} | {r['busy']:.0%} |"
        )
    # The size series, every `--report-every` seconds, one column per phase.
    step = args.report_every
    marks = [t for t in range(0, int(args.seconds) + 1, step)]
    series_rows = []
    for mark in marks:
        cells = []
        for r in results:
            near = min(r["samples"], key=lambda p: abs(p[0] - mark))
            cells.append(f"{_total(near[1]) / MB:.1f} ({sum(near[1]['rows'].values()):,})")
        series_rows.append(f"| {mark} | " + " | ".join(cells) + " |")
    end_t = max(r["samples"][-1][0] for r in results)
    if marks[-1] < end_t - 1:
        series_rows.append(
            f"| {end_t:.0f} (end) | "
            + " | ".join(
                f"{_total(r['samples'][-1][1]) / MB:.1f} ({sum(r['samples'][-1][1]['rows'].values()):,})"
                for r in results
            )
            + " |"
        )
    header = " | ".join(NAMES[r["phase"]] for r in results)
    tables = []
    for t in TABLES:
        cells = []
        for r in results:
            s = r["samples"][-1][1]
            cells.append(f"{s['sizes'][t] / MB:.1f} / {s['rows'][t]:,} / {r['final']['deleted'].get(t, 0):,}")
        tables.append(f"| `{t}` | " + " | ".join(cells) + " |")
    checks = []
    for r in results:
        checks.append(
            f"- {NAMES[r['phase']]}: {r['stats']['count']:,} webhooks for {r['load']['accepted']:,} calls "
            f"({r['stats']['distinct']:,} distinct webhook-ids, {r['stats']['valid']:,} valid signatures, "
            f"{r['stats']['invalid']} invalid; {r['load']['refused']} calls refused, {r['load']['errors']} errors), "
            f"the last within {r['delivered_at'] - r['load_seconds']:.1f} s of the load's end; requests, runs and deliveries "
            f"kept or counted as deleted: {', '.join(f'{n:,}' for n in r['kept_or_deleted'].values())}; "
            f"`GET /metrics` and the counter rows agree: "
            f"{'every call delivered once, signed, and accounted for' if r['ok'] else 'MISMATCH'}."
        )
    on, off = sums.get("on"), sums.get("off")
    contrast = ""
    if on and off:
        contrast = (
            f"\nIn this run, from warm-up ({on['warmup_t']:.0f} s) to the end of the load, the tables grew "
            f"{on['growth_mb']:+.1f} MB with retention on and {off['growth_mb']:+.1f} MB with it off; at the end they "
            f"held {on['end_mb']:.1f} MB against {off['end_mb']:.1f} MB "
            f"({on['end_mb'] / max(off['end_mb'], 1e-9):.2f} of the size without retention). Without retention "
            f"each call leaves about {off['bytes_per_call'] / 1024:.1f} KiB in these tables.\n"
        )
    unvac = ""
    if "unvacuumed" in sums:
        u = sums["unvacuumed"]
        unvac = (
            f"Retention on without VACUUM: {u['warmup_mb']:.1f} MB at warm-up, {u['end_mb']:.1f} MB at the end "
            f"({u['slope']:+.2f} MB/min after warm-up).\n"
        )
    return f"""
## Retention under sustained load (`make bench-retention`)

One run, {len(results)} phases, each on a service database migrated from scratch: Rowbell's processes as the
Procfile runs them with production settings (gunicorn with {WEB_WORKERS} sync workers, the dispatcher, a
`celery worker` with two processes, beat, the listener), and `POST /api/v1/trigger` calls (one recipient each,
to a published workflow with one webhook step) paced at {args.rate:g}/s for {args.seconds:g} s, delivered signed
to a local asyncio receiver. Every {args.sample:g} s the bench reads `pg_total_relation_size` (heap, indexes and
TOAST) of Rowbell's main tables and their row counts.

- **retention on**: finished work kept {args.retention_seconds:g} s (`ROWBELL_RETENTION_DAYS={args.retention_seconds / DAY:.6f}`),
  the audit trail {args.audit_retention_seconds:g} s (`ROWBELL_AUDIT_RETENTION_DAYS={args.audit_retention_seconds / DAY:.6f}`),
  pruned every {args.interval:g} s (`ROWBELL_RETENTION_INTERVAL`);
- **retention off**: the defaults (30 days, audit 365 days): nothing in the run is old enough to delete.

{vacuum_note}

Size of the tables below, MB; "warm-up" is the first sample at or after {args.warmup:g} s, when the oldest finished
work and audit rows have started to go; growth is from there to the end of the load (and its least-squares
slope over those samples):

| phase | calls (offered rate) | webhooks delivered | MB at warm-up | MB at end | max MB after warm-up | growth MB | rows at end | rows deleted by retention | VACUUMs | machine busy |
|---|---|---|---|---|---|---|---|---|---|---|
{chr(10).join(rows)}
{contrast}{unvac}
Size over time, MB (rows in these tables):

| s | {header} |
|---|{"---|" * len(results)}
{chr(10).join(series_rows)}

At the end of the load, per table: MB / rows / rows deleted by retention (`{DELETED}`):

| table | {header} |
|---|{"---|" * len(results)}
{chr(10).join(tables)}

Checks:
{chr(10).join(checks)}

Command: `make bench-retention` (runs `{command}`).
"""


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=360, help="how long each phase's load lasts (s)")
    parser.add_argument("--rate", type=float, default=150, help="trigger calls per second (offered)")
    parser.add_argument("--threads", type=int, default=8, help="threads making the calls")
    parser.add_argument("--sample", type=float, default=10, help="seconds between two size readings")
    parser.add_argument("--warmup", type=float, default=180, help="seconds before the size counts as warmed up")
    parser.add_argument("--retention-seconds", type=float, default=60, help="finished work kept (s)")
    parser.add_argument("--audit-retention-seconds", type=float, default=120, help="audit rows kept (s)")
    parser.add_argument("--interval", type=float, default=5, help="ROWBELL_RETENTION_INTERVAL (s)")
    parser.add_argument(
        "--vacuum-interval",
        type=float,
        default=60,
        help="with the server's autovacuum off: seconds between the bench's VACUUMs (0: none)",
    )
    parser.add_argument("--phases", default="on,off,unvacuumed", help="comma-separated: on, off, unvacuumed")
    parser.add_argument("--report-every", type=int, default=30, help="seconds between rows of the size series")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    phases = [p.strip() for p in args.phases.split(",") if p.strip()]
    unknown = set(phases) - set(NAMES)
    if unknown:
        parser.error(f"unknown phases: {', '.join(sorted(unknown))}")
    autovacuum = autovacuum_on()
    if autovacuum and "unvacuumed" in phases:
        phases.remove("unvacuumed")  # autovacuum runs anyway: the phase would repeat `on`
    results = []
    for phase in phases:
        every = 0.0 if autovacuum or phase == "unvacuumed" else args.vacuum_interval
        results.append(phase_run(phase, args, vacuum_every=every))
    command = (
        f".venv/bin/python bench/bench_retention.py --seconds {args.seconds:g} --rate {args.rate:g} "
        f"--threads {args.threads} --sample {args.sample:g} --warmup {args.warmup:g} "
        f"--retention-seconds {args.retention_seconds:g} --audit-retention-seconds {args.audit_retention_seconds:g} "
        f"--interval {args.interval:g} --vacuum-interval {args.vacuum_interval:g} --phases {','.join(phases)}"
    )
    text = section(results, args, command, autovacuum)
    print(text)
    if not args.no_write:
        section_write("bench-retention", text)


if __name__ == "__main__":
    main()
