"""Celery tasks: thin doors that carry ids into the services. The database says what is true."""

from celery import shared_task


# An operator's action may install triggers in a customer database (its statements, lock waits): longer
# than the default task time limits.
@shared_task(name="apps.core.tasks.queued_action_run", soft_time_limit=1800, time_limit=1860)
def queued_action_run_task(action_id: int) -> str | None:
    from .actions import queued_action_run

    return queued_action_run(action_id=action_id)


@shared_task(name="apps.core.tasks.queued_actions_reconcile")
def queued_actions_reconcile_task() -> int:
    from .actions import queued_actions_reconcile

    return queued_actions_reconcile()
