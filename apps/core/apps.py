from django.apps import AppConfig
from django.db.models.signals import post_migrate


class CoreConfig(AppConfig):
    name = "apps.core"
    label = "core"

    def ready(self):
        from . import checks  # noqa: F401  (registers the system checks)
        from .schedules import schedules_sync_after_migrate

        # `migrate` (the release step) and test flushes both leave the beat schedule complete.
        post_migrate.connect(schedules_sync_after_migrate, sender=self)
