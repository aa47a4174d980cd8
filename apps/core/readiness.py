"""Whether the processes of `make run` are up, each by a signal of its own (the `banner` process waits on them).

A check returns None once its process is ready, else a short reason. `checks_wait` calls every check until all
have passed or the time is up, and says which did not and why. A check that raises is a reason too: waiting
never fails (under honcho, a process that exits stops all the others).

The signals (apps/dashboard/management/commands/demo_banner.py puts them together):

- a web server answers HTTP with anything but a 5xx (`http_answers`);
- an SMTP server greets and answers NOOP (`smtp_answers`);
- a Celery worker answers a ping (`worker_answers`);
- beat is sending: a worker has run more of beat's periodic tasks than when the wait began (`beat_ticks`);
- a long-running loop holds its database session, found by its application_name (`database_session`).
"""

from __future__ import annotations

import http.client
import smtplib
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable

from django.db import DatabaseError, connection

Check = Callable[[], str | None]


def checks_wait(
    checks: dict[str, Check], *, timeout: float, interval: float = 0.5, stop: threading.Event | None = None
) -> dict[str, str]:
    """Call each check every `interval` seconds until it passes (a passed check is not called again), for at
    most `timeout` seconds or until `stop` is set. Returns what is not ready, {name: its latest reason};
    empty when everything is."""
    stop = stop or threading.Event()
    pending = dict(checks)
    reasons: dict[str, str] = {}
    deadline = time.monotonic() + timeout
    while True:
        for name, check in list(pending.items()):
            try:
                reason = check()
            except Exception as exc:  # noqa: BLE001 - a check that fails says why; it never ends the wait
                reason = f"{type(exc).__name__}: {exc}"
            if reason is None:
                del pending[name]
            else:
                reasons[name] = reason
        if not pending or time.monotonic() >= deadline or stop.wait(interval):
            return {name: reasons[name] for name in pending}


def http_answers(url: str, *, timeout: float = 2.0) -> Check:
    """Ready when `url` answers GET with a status below 500. The request goes straight to it: a proxy set in
    the environment (`http_proxy`) would answer for a local process, or not at all."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def check() -> str | None:
        try:
            with opener.open(url, timeout=timeout) as response:
                status = response.status
        except urllib.error.HTTPError as exc:
            status = exc.code
        except (OSError, http.client.HTTPException) as exc:
            return f"{url} does not answer ({getattr(exc, 'reason', None) or exc})"
        return None if status < 500 else f"{url} answers {status}"

    return check


def smtp_answers(host: str, port: int, *, timeout: float = 2.0) -> Check:
    """Ready when an SMTP server on `host`:`port` greets and answers NOOP with 250 (nothing is sent)."""

    def check() -> str | None:
        try:
            with smtplib.SMTP(host, port, timeout=timeout) as smtp:
                code, _ = smtp.noop()
        except (OSError, smtplib.SMTPException) as exc:
            return f"no SMTP server answers on {host}:{port} ({exc})"
        return None if code == 250 else f"the SMTP server on {host}:{port} answers NOOP with {code}"

    return check


def worker_answers(app, *, timeout: float = 1.0) -> Check:
    """Ready when a worker of the Celery `app` answers a ping."""

    def check() -> str | None:
        return None if app.control.ping(timeout=timeout, limit=1) else "no worker answers a ping"

    return check


def beat_ticks(app, tasks: Iterable[str], *, timeout: float = 1.0) -> Check:
    """Ready when the workers of the Celery `app` have run more of `tasks` (beat's periodic tasks) than at the
    first look: a tick that beat sent since then has reached a worker."""
    tasks = set(tasks)
    first: int | None = None

    def check() -> str | None:
        nonlocal first
        stats = app.control.inspect(timeout=timeout).stats() or {}
        if not stats:
            return "no worker answers, so no tick of beat can be seen"
        done = sum(n for worker in stats.values() for task, n in (worker.get("total") or {}).items() if task in tasks)
        if first is None:
            first = done
        return None if done > first else "no tick of beat has reached a worker yet"

    return check


def database_session(application_name: str) -> Check:
    """Ready when a session of the service database carries `application_name` (libpq reads it from
    PGAPPNAME), as a loop that keeps its connection does once it runs."""

    def check() -> str | None:
        try:
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT 1 FROM pg_stat_activity WHERE datname = current_database() AND application_name = %s",
                    [application_name],
                )
                found = cursor.fetchone() is not None
        except DatabaseError as exc:
            connection.close()
            return f"the service database does not answer ({str(exc).strip().splitlines()[0]})"
        return None if found else f"no database session named {application_name}"

    return check
