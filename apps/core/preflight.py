"""Check that PostgreSQL and Redis answer before anything starts; create the database if missing; with
`--listen name=port`, check that the ports `make run` listens on are free.

Runs before Django is set up (`python -m apps.core.preflight [--test] [--listen web=8000 ...]`), so that
`make run` and `make test` stop with a sentence saying what is wrong instead of a traceback (under honcho, a
process that cannot listen on its port would stop all the others).
"""

from __future__ import annotations

import socket
import sys
from pathlib import Path
from typing import Any

import environ
import psycopg
import redis
from psycopg import sql

BASE_DIR = Path(__file__).resolve().parent.parent.parent


def _fail(message: str) -> None:
    print(f"\n  rowbell: {message}\n", file=sys.stderr)
    sys.exit(1)


def check_postgres(url: str, *, create: bool) -> None:
    cfg = environ.Env.db_url_config(url)
    params: dict[str, Any] = {
        "host": cfg.get("HOST") or "127.0.0.1",
        "port": cfg.get("PORT") or 5432,
        "user": cfg.get("USER") or None,
        "password": cfg.get("PASSWORD") or None,
        "connect_timeout": 3,
    }
    where = f"{params['host']}:{params['port']}"
    try:
        with psycopg.connect(dbname="postgres", autocommit=True, **params) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [cfg["NAME"]]).fetchone()
            if create and not exists:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(cfg["NAME"])))
                print(f"rowbell: created database {cfg['NAME']}")
    except psycopg.OperationalError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
        _fail(
            f"PostgreSQL is not reachable at {where} ({first}).\n"
            f"  Start it (e.g. `pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start`)\n"
            f"  or point DATABASE_URL at a running server."
        )


def check_redis(url: str) -> None:
    try:
        redis.Redis.from_url(url, socket_connect_timeout=3, socket_timeout=3).ping()
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError) as exc:
        _fail(
            f"Redis is not reachable at {url} ({exc}).\n"
            f"  Start it (e.g. `redis-server --daemonize yes --bind 127.0.0.1 --port 6379`)\n"
            f"  or point REDIS_URL at a running server."
        )


def check_ports_free(ports: dict[str, int]) -> None:
    """Each port of `ports` ({what listens there: port}) can be listened on at 127.0.0.1, and no two processes
    are given the same one (each would find it free, then one would fail to listen and stop the others)."""
    by_port: dict[int, list[str]] = {}
    for what, port in ports.items():
        by_port.setdefault(port, []).append(what)
    for port, whats in by_port.items():
        if len(whats) > 1:
            _fail(f"Port {port} is given to {' and '.join(whats)}: choose another port, e.g. make run PORT=8010.")
    for what, port in ports.items():
        with socket.socket() as probe:
            # A port whose last connections are closing (TIME_WAIT) is free: the servers bind with this too.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                _fail(
                    f"Port {port} ({what}) is in use on 127.0.0.1: is `make run` already running?\n"
                    f"  Stop what listens there (`ss -ltnp 'sport = :{port}'` names it)"
                    + (", or choose another port: make run PORT=8010." if what == "web" else ".")
                )


def main(argv: list[str]) -> None:
    env = environ.Env()
    # The file the settings read (config/settings/base.py): make run and make test use local and test settings.
    environ.Env.read_env(env("DJANGO_ENV_FILE", default=str(BASE_DIR / ".env")), overwrite=False)
    testing = "--test" in argv
    database_url = env("DATABASE_URL", default="postgres://postgres@127.0.0.1:5432/rowbell")
    # Tests create their own test_ database; only the server has to answer.
    check_postgres(database_url, create=not testing)
    check_redis(
        env("TEST_REDIS_URL", default="redis://127.0.0.1:6379/15")
        if testing
        else env("REDIS_URL", default="redis://127.0.0.1:6379/0")
    )
    listen = [argv[i + 1] for i, arg in enumerate(argv[:-1]) if arg == "--listen"]
    check_ports_free({what: int(port) for what, port in (item.split("=", 1) for item in listen)})


if __name__ == "__main__":
    main(sys.argv[1:])
