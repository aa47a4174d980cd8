"""The `banner` process of `make run` (Procfile.dev): waits until every other process answers, prints where to
look, and stays.

Printed once everything is up, the banner is the last thing on the screen instead of scrolling away under the
processes' start. The signals are apps/core/readiness.py's: web answers HTTP, the worker a ping, beat's ticks
reach the worker, the dispatcher and the listener hold their database sessions (Procfile.dev names them with
PGAPPNAME), the sink answers HTTP and SMTP. Past the timeout, it prints what is not ready and why, then the
banner. It then sleeps until stopped: honcho stops every process as soon as one exits.
"""

import logging
import threading

from django.core.management.base import BaseCommand
from django.db import connection

from apps.core.readiness import (
    beat_ticks,
    checks_wait,
    database_session,
    http_answers,
    smtp_answers,
    worker_answers,
)
from apps.core.schedules import periodic_tasks
from apps.core.shutdown import stop_on_signals
from config.celery_app import app

from .seed_demo import SINK_PORT, SMTP_PORT, banner

# The application_name of each loop's database session, as Procfile.dev sets it (PGAPPNAME).
SESSIONS = {"dispatcher": "rowbell-dispatcher", "listener": "rowbell-listener"}


def demo_checks(*, port: int, sink_port: int, smtp_port: int) -> dict:
    """The readiness check of each process of Procfile.dev, by process name."""
    return {
        "web": http_answers(f"http://127.0.0.1:{port}/api/v1/workflows/schema.json"),
        "worker": worker_answers(app),
        "beat": beat_ticks(app, [spec["task"] for spec in periodic_tasks().values()]),
        **{name: database_session(application_name) for name, application_name in SESSIONS.items()},
        "sink": http_answers(f"http://127.0.0.1:{sink_port}/messages.json"),
        "sink (SMTP)": smtp_answers("127.0.0.1", smtp_port),
    }


class Command(BaseCommand):
    help = "Wait until every process of `make run` answers, print where to look, then stay (a Procfile.dev process)."

    def add_arguments(self, parser):
        parser.add_argument("--port", type=int, default=8000, help="The web process's port.")
        parser.add_argument("--sink-port", type=int, default=SINK_PORT)
        parser.add_argument("--smtp-port", type=int, default=SMTP_PORT)
        parser.add_argument("--timeout", type=float, default=120.0, help="Seconds to wait for every process.")
        parser.add_argument(
            "--exit", action="store_true", dest="exit_after", help="Exit once printed instead of staying."
        )

    def handle(self, *args, port, sink_port, smtp_port, timeout, exit_after, **options):
        # Staying, it stops cleanly on SIGTERM (honcho) and SIGINT; a one-off run keeps Python's own handling.
        stop = stop_on_signals() if not exit_after else threading.Event()
        checks = demo_checks(port=port, sink_port=sink_port, smtp_port=smtp_port)
        missing = checks_wait(checks, timeout=timeout, stop=stop)
        connection.close()  # from here on it only waits: it holds no database session
        if stop.is_set():
            return
        if missing:
            self.stdout.write(
                f"\n  Not ready after {timeout:g} s:\n"
                + "".join(f"    {name}: {reason}\n" for name, reason in missing.items())
            )
        headline = "Rowbell is ready." if not missing else "Rowbell has started, but not every process answers (above)."
        verbose = logging.getLogger().getEffectiveLevel() <= logging.INFO
        self.stdout.write(
            banner(port=port, sink_port=sink_port, smtp_port=smtp_port, headline=headline, verbose=verbose)
        )
        self.stdout.flush()
        if not exit_after:
            stop.wait()
