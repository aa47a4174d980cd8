from django.db.models import QuerySet

from apps.core.exceptions import InvalidInput, NotFound
from apps.tenants.principals import Tenant

from .models import Workflow, WorkflowVersion


def workflow_list(*, tenant: Tenant) -> QuerySet:
    return Workflow.objects.filter(product_id=tenant.product_id).select_related("published_version")


def workflow_get(*, tenant: Tenant, key: str) -> Workflow:
    workflow = workflow_list(tenant=tenant).filter(key=key).first()
    if workflow is None:
        raise NotFound("Workflow not found.")
    return workflow


def workflow_version_list(*, workflow: Workflow) -> QuerySet:
    return WorkflowVersion.objects.filter(workflow=workflow).order_by("-version")


def workflow_version_for_trigger(*, tenant: Tenant, key: str) -> WorkflowVersion:
    """The published version a trigger call starts; a clear field error if there is none."""
    row = (
        Workflow.objects.filter(product_id=tenant.product_id, key=key)
        .select_related("published_version")
        .only("id", "key", "published_version")
        .first()
    )
    if row is None:
        raise InvalidInput(f"No workflow with key '{key}'.", field="workflow")
    if row.published_version is None:
        raise InvalidInput(f"Workflow '{key}' has no published version: publish it first.", field="workflow")
    version = row.published_version
    version.workflow = row
    return version
