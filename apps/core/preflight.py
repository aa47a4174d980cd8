"""Check that PostgreSQL and Redis answer before anything starts; create the database if missing.

Runs before Django is set up (`python -m apps.core.preflight [--test]`), so that `make run` and
`make test` stop with a sentence saying what is wrong instead of a traceback.
"""

from __future__ import annotations

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


def main(argv: list[str]) -> None:
    env = environ.Env()
    environ.Env.read_env(BASE_DIR / ".env", overwrite=False)
    testing = "--test" in argv
    database_url = env("DATABASE_URL", default="postgres://postgres@127.0.0.1:5432/rowbell")
    # Tests create their own test_ database; only the server has to answer.
    check_postgres(database_url, create=not testing)
    check_redis(
        env("TEST_REDIS_URL", default="redis://127.0.0.1:6379/15")
        if testing
        else env("REDIS_URL", default="redis://127.0.0.1:6379/0")
    )


if __name__ == "__main__":
    main(sys.argv[1:])
