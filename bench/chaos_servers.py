"""Private, throwaway servers for bench/chaos.py: PostgreSQL clusters (initdb into a temporary directory, run
as the `postgres` OS user) and Redis, each on a free port of its own. Nothing here touches the machine's
shared PostgreSQL (5432) or Redis (6379)."""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

PG_BIN = Path(os.environ.get("ROWBELL_CHAOS_PG_BIN", "/usr/lib/postgresql/15/bin"))
SHARED_PORTS = {5432, 6379}


def free_port() -> int:
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in SHARED_PORTS:
            return port


def _as_postgres(args: list[str], *, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run `args` as the postgres OS user (PostgreSQL refuses to run as root)."""
    command = shlex.join(args)
    if os.geteuid() == 0:
        argv = ["su", "postgres", "-s", "/bin/sh", "-c", command]
    else:
        argv = ["sh", "-c", command]
    return subprocess.run(argv, check=check, capture_output=True, text=True, timeout=timeout)


class PrivatePostgres:
    """One PostgreSQL cluster in `root/name`, listening on 127.0.0.1 only, on a port of its own."""

    def __init__(self, root: Path, name: str):
        self.name = name
        self.dir = root / name
        self.data = self.dir / "data"
        self.log = self.dir / "server.log"
        self.port = free_port()
        self.started = False

    def init(self) -> None:
        self.dir.mkdir(parents=True)
        self.data.mkdir(mode=0o700)
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
            shutil.chown(self.data, "postgres", "postgres")
        _as_postgres(
            [str(PG_BIN / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"]
        )
        with open(self.data / "postgresql.conf", "a") as conf:
            conf.write(
                "\n# bench/chaos.py: a throwaway server\n"
                f"port = {self.port}\n"
                "listen_addresses = '127.0.0.1'\n"
                f"unix_socket_directories = '{self.dir}'\n"
                "max_connections = 300\n"
                "shared_buffers = 128MB\n"
                "fsync = off\n"
                "full_page_writes = off\n"
                "synchronous_commit = on\n"
                "log_min_messages = warning\n"
            )

    def start(self) -> None:
        _as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60", "start"])
        self.started = True

    def stop(self, mode: str = "fast") -> None:
        _as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop"], check=False)

    def restart_immediate(self, pause: float) -> None:
        """A crash: `pg_ctl stop -m immediate` (no checkpoint, clients cut), `pause` seconds down, then a start
        (crash recovery replays the WAL)."""
        self.stop("immediate")
        time.sleep(pause)
        self.start()

    def url(self, database: str) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/{database}"

    def dsn(self, database: str) -> str:
        return f"host=127.0.0.1 port={self.port} user=postgres dbname={database}"

    def psql(self, database: str, sql: str) -> str:
        return subprocess.run(
            [
                "psql",
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                "postgres",
                "-d",
                database,
                "-v",
                "ON_ERROR_STOP=1",
                "-qtAc",
                sql,
            ],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()

    def destroy(self) -> None:
        """Stop the server (immediately: it is thrown away), whatever state it is in."""
        if self.data.exists():
            self.stop("immediate")
            pidfile = self.data / "postmaster.pid"
            if pidfile.exists():  # pg_ctl could not stop it: end the postmaster itself
                try:
                    os.kill(int(pidfile.read_text().split()[0]), signal.SIGKILL)
                except (OSError, ValueError):
                    pass


class PrivateRedis:
    """A Redis server with no persistence: every restart starts it empty."""

    def __init__(self, root: Path):
        self.dir = root / "redis"
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.dir.mkdir(exist_ok=True)
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.dir),
                "--daemonize",
                "no",
                "--loglevel",
                "warning",
            ],
            stdout=open(self.dir / "redis.log", "ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        for _ in range(100):
            if self.cli("ping") == "PONG":
                return
            time.sleep(0.05)
        raise RuntimeError("the private redis-server did not start")

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def restart(self, pause: float) -> None:
        """SIGKILL, `pause` seconds down, start again: empty, as it keeps nothing on disk."""
        self.kill()
        time.sleep(pause)
        self.start()

    def cli(self, *args: str) -> str:
        out = subprocess.run(
            ["redis-cli", "-h", "127.0.0.1", "-p", str(self.port), *args], capture_output=True, text=True, timeout=10
        )
        return out.stdout.strip()

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"
