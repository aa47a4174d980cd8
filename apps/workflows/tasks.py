"""Celery tasks: thin doors that carry ids into the services. The database says what is true."""

from celery import shared_task


@shared_task(name="apps.workflows.tasks.workflow_publish")
def workflow_publish_task(workflow_id: int, actor: str) -> None:
    from .services import workflow_publish_queued

    workflow_publish_queued(workflow_id=workflow_id, actor=actor)


@shared_task(name="apps.workflows.tasks.workflow_unpublish")
def workflow_unpublish_task(workflow_id: int, actor: str) -> None:
    from .models import Workflow
    from .services import workflow_unpublish

    workflow = Workflow.objects.filter(id=workflow_id).first()
    if workflow is not None:
        workflow_unpublish(workflow=workflow, actor=actor)
