from __future__ import annotations

import logging

import psycopg
from django.db import IntegrityError, transaction
from django.db.models import Max

from apps.audit.services import audit_record
from apps.core.exceptions import Conflict

from .definition import definition_validate
from .models import Workflow, WorkflowVersion

logger = logging.getLogger(__name__)


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


def workflow_publish(*, workflow: Workflow, actor: str) -> WorkflowVersion:
    """Freeze the draft as the next immutable version and make it the one triggers use.

    A `database` trigger is checked against the table as it is now and its capture installed in the
    customer database inside the transaction that saves the version: if the install fails, nothing is
    published. The capture of the version it replaces is retired once nothing else uses it.
    """
    from apps.connections.models import Connection
    from apps.connections.services import connection_captures_install

    with transaction.atomic():
        workflow = Workflow.objects.select_for_update(of=("self",)).select_related("product", "published_version").get(
            pk=workflow.pk)
        previous = workflow.published_version
        # Validate again: what the draft refers to (an endpoint, a table) may have changed since saving.
        captures: list = []
        definition = definition_validate(workflow.draft, product=workflow.product, captures=captures)
        capture = captures[0] if captures else None
        connection = None
        if capture is not None:
            connection = Connection.objects.get(id=definition["trigger"]["connection"])
        last = workflow.versions.aggregate(n=Max("version"))["n"] or 0
        version = WorkflowVersion.objects.create(
            workflow=workflow, version=last + 1, definition=definition, published_by=actor, connection=connection,
            capture=capture.name if capture else "", capture_spec=capture.to_spec() if capture else None)
        workflow.published_version = version
        workflow.save(update_fields=["published_version", "updated_at"])
        audit_record(action="workflow.published", target_type="workflow", target_id=workflow.key,
                     product_id=workflow.product_id, actor=actor,
                     data={"version": version.version, "trigger": definition["trigger"]})
        if capture is not None:
            # Serialized with prunes of this connection (see connection_captures_prune).
            Connection.objects.select_for_update().filter(id=connection.id).first()
            connection_captures_install(connection=connection, captures=[capture], actor=actor)
    _retire_unused(previous, keep=version, actor=actor)
    return version


def workflow_unpublish(*, workflow: Workflow, actor: str) -> Workflow:
    """Stop new runs of a workflow: triggers refuse it and its database events launch nothing. Runs
    already started keep their version and finish. Its capture is retired once nothing else uses it."""
    with transaction.atomic():
        workflow = Workflow.objects.select_for_update(of=("self",)).select_related("published_version").get(
            pk=workflow.pk)
        previous = workflow.published_version
        if previous is None:
            return workflow
        workflow.published_version = None
        workflow.save(update_fields=["published_version", "updated_at"])
        audit_record(action="workflow.unpublished", target_type="workflow", target_id=workflow.key,
                     product_id=workflow.product_id, actor=actor, data={"version": previous.version})
    _retire_unused(previous, keep=None, actor=actor)
    return workflow


def _retire_unused(previous: WorkflowVersion | None, *, keep: WorkflowVersion | None, actor: str) -> None:
    """After a version stopped being the published one: retire its capture if nothing uses it now."""
    if previous is None or not previous.connection_id:
        return
    if keep is not None and keep.connection_id == previous.connection_id and keep.capture == previous.capture:
        return
    from apps.connections.services import connection_captures_prune

    try:
        connection_captures_prune(connection=previous.connection, actor=actor)
    except psycopg.Error:
        # The change stands; the unused trigger is retired by the next `triggers prune`.
        logger.warning("Could not retire the trigger of %s v%s now: its database is unreachable.",
                       previous.workflow_id, previous.version)
