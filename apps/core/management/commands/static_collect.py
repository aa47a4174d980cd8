"""`manage.py static_collect`: the Procfile's `web` start collects the static files, one process at a time."""

import fcntl
from pathlib import Path

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = (
        "Collect the static files into STATIC_ROOT (collectstatic), holding a lock beside it so that processes "
        "starting together take turns; does nothing when ROWBELL_COLLECTSTATIC_AT_START is false (files collected "
        "at build time, a read-only file system)."
    )

    def handle(self, *args, **options) -> None:
        """Collect, or skip. Several `web` processes started at once on one directory would otherwise delete and
        rewrite each other's files (Django's manifest storage post-processes every file on each run) and fail
        with FileNotFoundError. Raises OSError when the directory beside STATIC_ROOT cannot hold the lock."""
        if not settings.ROWBELL_COLLECTSTATIC_AT_START:
            return
        root = Path(settings.STATIC_ROOT)
        root.parent.mkdir(parents=True, exist_ok=True)
        with open(root.parent / f".{root.name}.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, or when the process dies
            call_command("collectstatic", interactive=False, verbosity=0)
