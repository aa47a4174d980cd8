from __future__ import annotations

from django.db import IntegrityError, transaction
from django.db.models import Max

from apps.audit.services import audit_record
from apps.core.exceptions import Conflict

from .definition import definition_validate
from .models import Workflow, WorkflowVersion


def workflow_create(*, product, key: str, name: str = "", definition: dict, actor: str) -> Workflow:
    """Create a workflow as a draft. Triggers use it only once it is published."""
    draft = definition_validate(definition, product=product)
    try:
        with transaction.atomic():
            workflow = Workflow.objects.create(product=product, key=key, name=name, draft=draft)
            audit_record(action="workflow.created", target_type="workflow", target_id=workflow.key,
                         product_id=product.id, actor=actor, data={"draft": draft})
    except IntegrityError:
        raise Conflict(f"A workflow with key '{key}' already exists.", field="key") from None
    return workflow


@transaction.atomic
def workflow_update(*, workflow: Workflow, name: str | None = None, definition: dict, actor: str) -> Workflow:
    """Replace the draft. Published versions are untouched until the next publish."""
    workflow.draft = definition_validate(definition, product=workflow.product)
    if name is not None:
        workflow.name = name
    workflow.save(update_fields=["draft", "name", "updated_at"])
    audit_record(action="workflow.updated", target_type="workflow", target_id=workflow.key,
                 product_id=workflow.product_id, actor=actor, data={"draft": workflow.draft})
    return workflow


@transaction.atomic
def workflow_publish(*, workflow: Workflow, actor: str) -> WorkflowVersion:
    """Freeze the draft as the next immutable version and make it the one triggers use."""
    workflow = Workflow.objects.select_for_update().select_related("product").get(pk=workflow.pk)
    # Validate again: what the draft refers to (e.g. a webhook endpoint) may have changed since saving.
    definition = definition_validate(workflow.draft, product=workflow.product)
    last = workflow.versions.aggregate(n=Max("version"))["n"] or 0
    version = WorkflowVersion.objects.create(workflow=workflow, version=last + 1, definition=definition,
                                             published_by=actor)
    workflow.published_version = version
    workflow.save(update_fields=["published_version", "updated_at"])
    audit_record(action="workflow.published", target_type="workflow", target_id=workflow.key,
                 product_id=workflow.product_id, actor=actor, data={"version": version.version})
    return version
