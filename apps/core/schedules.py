"""The beat schedule, kept in django-celery-beat's tables and synchronised by name.

Rows are created or updated, never deleted wholesale, so an operator's own periodic tasks and
their enabled/disabled state survive every deploy.
"""

from django.conf import settings


def periodic_tasks() -> dict[str, dict]:
    return {
        "rowbell: dispatch due deliveries": {
            "task": "apps.deliveries.tasks.deliveries_dispatch_due",
            "every": settings.ROWBELL_DISPATCH_INTERVAL,
        },
        "rowbell: poll customer event logs": {
            "task": "apps.connections.tasks.event_logs_poll",
            "every": settings.ROWBELL_POLL_INTERVAL,
        },
        "rowbell: read connections' backlog and lag": {
            "task": "apps.connections.tasks.connections_health_refresh",
            "every": settings.ROWBELL_HEALTH_INTERVAL,
        },
        "rowbell: prune consumed customer events": {
            "task": "apps.connections.tasks.event_logs_prune",
            "every": settings.ROWBELL_EVENT_LOG_PRUNE_INTERVAL,
        },
        "rowbell: resume runs whose wait is over": {
            "task": "apps.runs.tasks.runs_resume_due",
            "every": settings.ROWBELL_RESUME_INTERVAL,
        },
        "rowbell: tell operators about failed runs": {
            "task": "apps.runs.tasks.escalations_send",
            "every": max(settings.ROWBELL_RESUME_INTERVAL, 5),
        },
        "rowbell: re-send lost operators' actions": {
            "task": "apps.core.tasks.queued_actions_reconcile",
            "every": settings.ROWBELL_RECONCILE_INTERVAL,
        },
        "rowbell: delete finished work past its retention": {
            "task": "apps.runs.tasks.retention_prune",
            "every": settings.ROWBELL_RETENTION_INTERVAL,
        },
        "rowbell: reconcile lost work": {
            "task": "apps.runs.tasks.work_reconcile",
            "every": settings.ROWBELL_RECONCILE_INTERVAL,
        },
    }


def schedules_sync() -> list[str]:
    """Create or update every Rowbell periodic task; return their names."""
    from django_celery_beat.models import IntervalSchedule, PeriodicTask

    names = []
    for name, spec in periodic_tasks().items():
        every = max(1, round(spec["every"]))
        interval, _ = IntervalSchedule.objects.get_or_create(every=every, period=IntervalSchedule.SECONDS)
        PeriodicTask.objects.update_or_create(
            name=name,
            defaults={
                "task": spec["task"],
                "interval": interval,
                "queue": "high",
                # A tick nobody picked up within a few periods is useless: the next one does its work.
                "expire_seconds": every * 5,
            },
        )
        names.append(name)
    return names


def schedules_sync_after_migrate(sender, using="default", **kwargs):
    from django.db import connections

    # Skip when django_celery_beat's own tables do not exist yet (partial migrate runs).
    tables = connections[using].introspection.table_names()
    if "django_celery_beat_periodictask" in tables:
        schedules_sync()
