"""Celery tasks: thin doors that carry ids into the services. The database says what is true."""

from celery import shared_task


@shared_task(name="apps.connections.tasks.event_logs_poll")
def event_logs_poll_task() -> int:
    from .services import event_logs_poll

    return event_logs_poll()


@shared_task(name="apps.connections.tasks.event_logs_prune")
def event_logs_prune_task() -> int:
    from .services import event_logs_prune

    return event_logs_prune()


@shared_task(name="apps.connections.tasks.connections_health_refresh")
def connections_health_refresh_task() -> int:
    from .services import connections_health_refresh

    return connections_health_refresh()
