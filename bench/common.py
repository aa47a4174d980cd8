"""What the end-to-end benchmarks share: where their databases and Redis live, starting and stopping
Rowbell's processes, CPU accounting, the local receiver and the plain keep-alive POST loop.

Databases and Redis: the servers named by `DATABASE_URL` and `REDIS_URL` in the environment (host, port
and user; the database name and Redis database number are the benchmark's own), or PostgreSQL on
127.0.0.1:5432 and Redis on 127.0.0.1:6379 when they are unset. A benchmark drops and creates its own
databases on that server, so point these at a server of your own while others work on the machine.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
LOGS = ROOT / ".bench"


def pg_server() -> tuple[str, int, str]:
    """(host, port, user) of the benchmarks' PostgreSQL server."""
    url = urlsplit(os.environ.get("DATABASE_URL") or "postgres://postgres@127.0.0.1:5432/rowbell")
    return url.hostname or "127.0.0.1", url.port or 5432, url.username or "postgres"


def database_url(name: str) -> str:
    """The URL of database `name` on the benchmarks' PostgreSQL server."""
    host, port, user = pg_server()
    return f"postgres://{user}@{host}:{port}/{name}"


def pg_args() -> list[str]:
    """psql/pgbench connection options for the benchmarks' PostgreSQL server."""
    host, port, user = pg_server()
    return ["-h", host, "-p", str(port), "-U", user]


def redis_url(db: int) -> str:
    """Redis database `db` on the benchmarks' Redis server."""
    url = urlsplit(os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0")
    return f"redis://{url.hostname or '127.0.0.1'}:{url.port or 6379}/{db}"


def psql(db: str, statement: str) -> str:
    return subprocess.run(
        ["psql", *pg_args(), "-d", db, "-qtAc", statement], check=True, capture_output=True, text=True
    ).stdout.strip()


def databases_recreate(*names: str) -> None:
    for db in names:
        subprocess.run(
            ["psql", *pg_args(), "-d", "postgres", "-qc", f"DROP DATABASE IF EXISTS {db} WITH (FORCE)"],
            capture_output=True,
        )
        psql("postgres", f"CREATE DATABASE {db}")


def redis_flush(url: str) -> None:
    parts = urlsplit(url)
    subprocess.run(
        ["redis-cli", "-h", parts.hostname, "-p", str(parts.port), "-n", parts.path.strip("/") or "0", "flushdb"],
        check=True,
        capture_output=True,
    )


def service_env(*, database: str, redis: str, **extra: str) -> dict:
    """Production settings on the benchmark's own database and Redis database."""
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings.production",
        "DJANGO_SECRET_KEY": "bench",
        "DATABASE_URL": database_url(database),
        "REDIS_URL": redis,
        "LOG_LEVEL": "WARNING",
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1",
        "ROWBELL_PUBLIC_URL": "http://127.0.0.1",
        **extra,
    }


def django(code: str, env: dict) -> str:
    """Run `code` in `manage.py shell` with `env`; return what it printed."""
    return subprocess.run(
        [sys.executable, "manage.py", "shell", "--no-imports", "-c", code],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


def migrate(env: dict) -> None:
    subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=ROOT, env=env, check=True)


def start(name: str, args: list[str], env: dict) -> subprocess.Popen:
    """Start a process in a session of its own (so that stop_all ends it and its children), logging to
    .bench/<name>.log."""
    LOGS.mkdir(exist_ok=True)
    log = open(LOGS / f"{name}.log", "wb")
    return subprocess.Popen(args, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def web_start(name: str, *, port: int, workers: int, env: dict) -> subprocess.Popen:
    """gunicorn as the Procfile runs it (sync workers), started and answering /ping on `port`."""
    import urllib.request

    web = start(
        name,
        [
            str(Path(sys.executable).parent / "gunicorn"),
            "config.wsgi",
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            str(workers),
            "--log-level",
            "warning",
        ],
        env,
    )
    for _ in range(100):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=1)
            break
        except OSError:
            time.sleep(0.1)
    return web


def stop_all(procs: dict[str, subprocess.Popen]) -> None:
    for proc in procs.values():
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    for proc in procs.values():
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


CELERY = [sys.executable, "-m", "celery", "-A", "config.celery_app"]


def workers_start(procs: dict, env: dict, *, listener: bool = True) -> None:
    """The worker (two processes, as the Procfile's default), beat and, with `listener`, the listener."""
    procs["worker"] = start(
        "worker",
        [
            *CELERY,
            "worker",
            "-Q",
            "high,normal,low",
            "-c",
            "2",
            "-l",
            "warning",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        ],
        env,
    )
    procs["beat"] = start("beat", [*CELERY, "beat", "-l", "warning"], env)
    if listener:
        procs["listener"] = start("listener", [sys.executable, "manage.py", "run_listener"], env)


def postmaster_pid() -> int | None:
    """The pid of the benchmarks' PostgreSQL server (read from its data directory), if it is on this machine."""
    try:
        data = psql("postgres", "SELECT setting FROM pg_settings WHERE name = 'data_directory'")
        return int(Path(data, "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, subprocess.CalledProcessError):
        return None


def cpu_by_process(procs: dict[str, subprocess.Popen], *, extra: dict[int, str] | None = None) -> dict[str, float]:
    """CPU seconds used so far by the processes still alive, summed by role: each of `procs` with its
    children (the session it leads), the pids of `extra`, the benchmarks' PostgreSQL server (its postmaster
    and every process it started) and its Redis server. Processes of anyone else on the machine are left out."""
    tick = os.sysconf("SC_CLK_TCK")
    sessions = {proc.pid: name for name, proc in procs.items()}
    pids = dict(extra or {})
    postmaster = postmaster_pid()
    redis = f":{urlsplit(redis_url(0)).port} "
    out: dict[str, float] = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        ppid, session = int(fields[1]), int(fields[3])
        name = (
            pids.get(int(pid))
            or sessions.get(session)
            or ("PostgreSQL" if postmaster and postmaster in (int(pid), ppid) else None)
            or ("Redis" if cmd.startswith("redis-server") and redis in cmd + " " else None)
        )
        if name:
            out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    return out


def machine_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far, all cores, from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    tick = os.sysconf("SC_CLK_TCK")
    return (sum(fields) - idle) / tick, sum(fields) / tick


def cpu_table(before: dict, after: dict, delivered: int) -> tuple[dict, str]:
    """CPU ms per delivered webhook by role, and as Markdown table rows."""
    cpu = {name: (after[name] - before.get(name, 0.0)) * 1000 / max(delivered, 1) for name in after}
    rows = "\n".join(f"| {name} | {ms:.2f} |" for name, ms in sorted(cpu.items(), key=lambda x: -x[1]))
    return cpu, rows


def receiver_start(procs: dict, port: int, *, secret: str | None = None) -> None:
    """The local asyncio receiver (bench/receiver.py); with `secret`, it verifies every signature."""
    args = [sys.executable, "bench/receiver.py", "--port", str(port)]
    if secret:
        args += ["--secret", secret]
    procs["receiver"] = start("receiver", args, os.environ.copy())
    time.sleep(1)


def receiver_stats(pool, port: int) -> dict:
    """What the receiver counted: `count` (POSTs), `distinct` webhook-ids, `valid` and `invalid` signatures."""
    return json.loads(pool.request("GET", f"http://127.0.0.1:{port}/stats").data)


def plain_loop(port: int, seconds: float) -> float:
    """The reference: one thread POSTing a webhook-sized signed body over one keep-alive connection to
    the receiver; returns POSTs per second."""
    import urllib3

    pool = urllib3.PoolManager()
    body = json.dumps(
        {
            "type": "workflow.notification",
            "timestamp": "2026-01-01T00:00:00+00:00",
            "data": {
                "workflow": "order-created",
                "version": 1,
                "step": "step-1",
                "request_id": None,
                "recipient": {},
                "data": {},
                "event": {
                    "id": "evt_1",
                    "type": "row.created",
                    "table": "public.orders",
                    "ids": [1],
                    "occurred_at": "2026-01-01T00:00:00+00:00",
                },
            },
        }
    ).encode()
    headers = {
        "Content-Type": "application/json",
        "webhook-id": "msg_" + "0" * 32,
        "webhook-timestamp": "1767225600",
        "webhook-signature": "v1," + "A" * 44,
        "x-bench-plain": "1",
    }
    sent, began = 0, time.monotonic()
    while time.monotonic() - began < seconds:
        response = pool.request("POST", f"http://127.0.0.1:{port}/hook", body=body, headers=headers)
        assert response.status == 200
        sent += 1
    return sent / (time.monotonic() - began)
