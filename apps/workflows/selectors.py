from django.db.models import QuerySet

from apps.core.exceptions import InvalidInput, NotFound
from apps.tenants.principals import Tenant

from .models import Workflow, WorkflowVersion


def workflow_list(*, tenant: Tenant) -> QuerySet:
    return Workflow.objects.filter(product_id=tenant.product_id).select_related("published_version")


def workflow_get(*, tenant: Tenant, key: str) -> Workflow:
    workflow = workflow_list(tenant=tenant).filter(key=key).first()
    if workflow is None:
        raise NotFound(
            f"No workflow has the key '{key}' here: GET /api/v1/workflows lists them, POST /api/v1/workflows creates one."
        )
    return workflow


def workflow_version_list(*, workflow: Workflow) -> QuerySet:
    return WorkflowVersion.objects.filter(workflow=workflow).order_by("-version")


def workflow_version_for_trigger(*, tenant: Tenant, key: str) -> WorkflowVersion:
    """The published version a trigger call starts; a clear field error if there is none."""
    row = (
        Workflow.objects.filter(product_id=tenant.product_id, key=key)
        .select_related("published_version")
        .only("id", "key", "published_version", "published_version__id", "published_version__definition")
        .first()
    )
    if row is None:
        raise InvalidInput(f"No workflow with key '{key}'.", field="workflow")
    if row.published_version is None:
        raise InvalidInput(f"Workflow '{key}' has no published version: publish it first.", field="workflow")
    version = row.published_version
    trigger = version.definition.get("trigger") or {}
    if trigger.get("type", "api") != "api":
        raise InvalidInput(
            f"Workflow '{key}' is started by changes to rows of {trigger.get('table', 'its table')} (a database "
            "trigger), not by trigger calls: change the rows, or start it for rows that exist with "
            f"POST /api/v1/workflows/{key}/backfill.",
            field="workflow",
        )
    version.workflow = row
    return version
