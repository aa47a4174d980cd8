"""The `dispatcher` process: turns newly accepted trigger requests into Celery work, in batches.

The trigger API only writes rows; this loop claims them (highest priority first) and hints the
workers, so one Redis round trip serves many requests under load and the API keeps accepting work
while Redis is away. Polls every 10 ms while there is work, backing off to 100 ms when idle.
With Redis unreachable it goes on claiming: the hints are sent after commit under apps.core.hints'
policy (never raises; one warning per failed send), and the reconciler sends them again later.
Several dispatchers may run: they claim with SKIP LOCKED and never hint the same request twice.
"""

import logging
import time

from django.conf import settings
from django.core.management.base import BaseCommand
from django.db import DatabaseError, close_old_connections

from apps.core.shutdown import stop_on_signals
from apps.runs.services import DISPATCH_LIMIT, requests_dispatch

logger = logging.getLogger("rowbell.dispatcher")


class Command(BaseCommand):
    help = "Run the request dispatcher loop (a Procfile process)."

    def add_arguments(self, parser):
        parser.add_argument("--once", action="store_true", help="One pass, then exit.")

    def handle(self, *args, once=False, **options):
        stop = stop_on_signals()
        busy, idle_max = 0.01, settings.ROWBELL_DISPATCHER_IDLE_SECONDS
        pause = busy
        self.stdout.write("Dispatcher started.")
        while not stop.is_set():
            try:
                count = requests_dispatch()
            except DatabaseError:
                logger.warning("Dispatcher cannot reach the database; retrying.", exc_info=True)
                close_old_connections()
                count, pause = 0, 1.0
            except Exception:  # not the broker (hints never raise, apps.core.hints): logged, retried
                logger.exception("Dispatcher pass failed; retrying.")
                count, pause = 0, 1.0
            if once:
                break
            if count >= DISPATCH_LIMIT:
                continue
            pause = busy if count else min(idle_max, pause * 1.5)
            time.sleep(pause)
        self.stdout.write("Dispatcher stopped.")
