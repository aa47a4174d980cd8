"""Celery tasks: thin doors that carry ids into the services. The database says what is true."""

from celery import shared_task


@shared_task(name="apps.runs.tasks.requests_start")
def requests_start_task(request_ids: list[str]) -> None:
    from .services import requests_start

    requests_start(request_ids=request_ids)


@shared_task(name="apps.runs.tasks.runs_execute")
def runs_execute_task(run_ids: list[int]) -> None:
    from .services import runs_execute

    runs_execute(run_ids=run_ids)


@shared_task(name="apps.runs.tasks.work_reconcile")
def work_reconcile_task() -> dict:
    from apps.deliveries.services import deliveries_reconcile

    from .services import runs_reconcile

    return runs_reconcile() | {"deliveries_requeued": deliveries_reconcile()}


@shared_task(name="apps.runs.tasks.runs_resume_due")
def runs_resume_due_task() -> int:
    from .engine import runs_resume_due

    return runs_resume_due()


@shared_task(name="apps.runs.tasks.escalations_send")
def escalations_send_task() -> int:
    from .escalation import escalations_send

    return escalations_send()


@shared_task(name="apps.runs.tasks.retention_prune")
def retention_prune_task() -> dict:
    from .retention import retention_prune

    return retention_prune()
