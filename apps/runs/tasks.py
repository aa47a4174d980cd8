"""Celery tasks: thin doors that carry ids into the services. The database says what is true."""

from celery import shared_task


@shared_task(name="apps.runs.tasks.request_start")
def request_start_task(request_id: str) -> int:
    from .services import request_start

    return len(request_start(request_id=request_id))


@shared_task(name="apps.runs.tasks.runs_execute")
def runs_execute_task(run_ids: list[int]) -> None:
    from .services import runs_execute

    runs_execute(run_ids=run_ids)


@shared_task(name="apps.runs.tasks.work_reconcile")
def work_reconcile_task() -> dict:
    from apps.deliveries.services import deliveries_reconcile

    from .services import runs_reconcile

    return runs_reconcile() | {"deliveries_requeued": deliveries_reconcile()}
