"""Celery tasks: thin doors that carry ids into the services. The database says what is true."""

from celery import shared_task

# These wait on customer databases, one after another (each statement up to its timeout): longer than the
# default task time limits (CELERY_TASK_SOFT_TIME_LIMIT), which are sized for Rowbell's own work.
CUSTOMER_DATABASE_LIMITS = {"soft_time_limit": 1800, "time_limit": 1860}


@shared_task(name="apps.connections.tasks.event_logs_poll", **CUSTOMER_DATABASE_LIMITS)
def event_logs_poll_task() -> int:
    from .services import event_logs_poll

    return event_logs_poll()


@shared_task(name="apps.connections.tasks.event_logs_prune", **CUSTOMER_DATABASE_LIMITS)
def event_logs_prune_task() -> int:
    from .services import event_logs_prune

    return event_logs_prune()


@shared_task(name="apps.connections.tasks.connections_health_refresh", **CUSTOMER_DATABASE_LIMITS)
def connections_health_refresh_task() -> int:
    from .services import connections_health_refresh

    return connections_health_refresh()
