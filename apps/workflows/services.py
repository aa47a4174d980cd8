from __future__ import annotations

import logging
from datetime import datetime
from typing import TYPE_CHECKING

import psycopg
from django.db import IntegrityError, transaction
from django.db.models import F, Max
from django.utils import timezone

from apps.audit.services import audit_record
from apps.core.exceptions import Conflict
from apps.core.masking import sealed_masked

from .definition import definition_validate
from .hooks import runs_cancel
from .models import Workflow, WorkflowVersion

if TYPE_CHECKING:
    from apps.connections.capture import Capture

logger = logging.getLogger(__name__)


def workflow_create(
    *, product, key: str, name: str = "", definition: dict, sandbox: bool = False, actor: str
) -> Workflow:
    """Create a workflow as a draft. Triggers use it only once it is published."""
    draft = definition_validate(definition, product=product)
    try:
        with transaction.atomic():
            workflow = Workflow.objects.create(product=product, key=key, name=name, draft=draft, sandbox=sandbox)
            audit_record(
                action="workflow.created",
                target_type="workflow",
                target_id=workflow.key,
                product_id=product.id,
                actor=actor,
                data={"draft": draft, "sandbox": sandbox},
            )
    except IntegrityError:
        raise Conflict(
            f"A workflow with key '{key}' already exists. To change it, send PUT /api/v1/workflows/{key} (the "
            f"draft is replaced; publish it to use it); to keep both, choose another key.",
            field="key",
        ) from None
    return workflow


@transaction.atomic
def workflow_update(
    *, workflow: Workflow, name: str | None = None, definition: dict, sandbox: bool | None = None, actor: str
) -> Workflow:
    """Replace the draft. Published versions are untouched until the next publish; `sandbox` applies at
    once (to every delivery rendered from now on)."""
    workflow.draft = definition_validate(definition, product=workflow.product)
    if name is not None:
        workflow.name = name
    if sandbox is not None:
        workflow.sandbox = sandbox
    workflow.save(update_fields=["draft", "name", "sandbox", "updated_at"])
    audit_record(
        action="workflow.updated",
        target_type="workflow",
        target_id=workflow.key,
        product_id=workflow.product_id,
        actor=actor,
        data={"draft": workflow.draft, "sandbox": workflow.sandbox},
    )
    return workflow


def workflow_publish(*, workflow: Workflow, actor: str) -> WorkflowVersion:
    """Freeze the draft as the next immutable version and make it the one triggers use.

    A `database` trigger is checked against the table as it is now and its capture installed in the
    customer database inside the transaction that saves the version: if the install fails, nothing is
    published. The capture of the version it replaces is retired once nothing else uses it.
    """
    from apps.connections.models import Connection
    from apps.connections.services import connection_captures_install

    # Validate again, before taking any lock (a database trigger reads the customer's catalog): what the
    # draft refers to (an endpoint, a table) may have changed since saving.
    workflow = Workflow.objects.select_related("product").get(pk=workflow.pk)
    draft = workflow.draft
    captures: list[tuple[Capture, dict]] = []
    definition = definition_validate(draft, product=workflow.product, captures=captures)
    capture, rows_from = captures[0] if captures else (None, None)
    with transaction.atomic():
        workflow = (
            Workflow.objects.select_for_update(of=("self",))
            .select_related("product", "published_version")
            .get(pk=workflow.pk)
        )
        if workflow.draft != draft:
            raise Conflict("The draft changed while it was being published; publish again.")
        previous = workflow.published_version
        connection = None
        if capture is not None:
            connection = Connection.objects.get(id=definition["trigger"]["connection"])
        last = workflow.versions.aggregate(n=Max("version"))["n"] or 0
        version = WorkflowVersion.objects.create(
            workflow=workflow,
            version=last + 1,
            definition=definition,
            published_by=actor,
            connection=connection,
            capture=capture.name if capture else "",
            capture_spec=capture.to_spec() if capture else None,
            rows_from=rows_from,
        )
        workflow.published_version = version
        workflow.save(update_fields=["published_version", "updated_at"])
        audit_record(
            action="workflow.published",
            target_type="workflow",
            target_id=workflow.key,
            product_id=workflow.product_id,
            actor=actor,
            data={"version": version.version, "trigger": definition["trigger"]},
        )
        if connection is not None:  # a database trigger: its capture is installed
            # Serialized with prunes of this connection (see connection_captures_prune).
            Connection.objects.select_for_update().filter(id=connection.id).first()
            connection_captures_install(connection=connection, captures=[capture], actor=actor)
    _retire_unused(previous, keep=version, actor=actor)
    return version


def workflow_unpublish(*, workflow: Workflow, cancel_runs: bool = False, actor: str) -> Workflow:
    """Stop new runs of a workflow: triggers refuse it and its database events launch nothing. Runs
    already started keep their version and finish, or, with `cancel_runs`, the queued and waiting ones
    are cancelled. Its capture is retired once nothing else uses it."""
    with transaction.atomic():
        workflow = (
            Workflow.objects.select_for_update(of=("self",)).select_related("published_version").get(pk=workflow.pk)
        )
        previous = workflow.published_version
        if previous is None:
            return workflow
        workflow.published_version = None
        workflow.save(update_fields=["published_version", "updated_at"])
        cancelled = sum(runs_cancel.call_each(workflow=workflow, actor=actor)) if cancel_runs else 0
        audit_record(
            action="workflow.unpublished",
            target_type="workflow",
            target_id=workflow.key,
            product_id=workflow.product_id,
            actor=actor,
            data={"version": previous.version, "cancelled_runs": cancelled},
        )
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
        logger.warning(
            "Could not retire the trigger of %s v%s now: its database is unreachable.",
            previous.workflow_id,
            previous.version,
        )


def workflow_preview(
    *, workflow: Workflow, sample: dict, definition: dict | None = None, real: bool = False
) -> list[dict]:
    """Render every step of the draft with sample data, without sending or recording anything.

        `sample` may hold `data`, `recipient`, `event`, `row` (and `rows`, `missing_ids`), `related` ({name: row})
        as steps would see them (workflow_preview_sample reads them from the customer's database). Every
        notify step is rendered, in every branch; a branch says which way the sample goes. Returns one item per
        step: {"step", "path", "type", and for a notify step "channel" and "target" and "payload", or "skipped"
        (why nothing would be sent), or "error" (why it would fail)}; a notify step that would send names its
    "provider" (apps.deliveries.selectors.provider_configured; not for webhooks). Every template that cannot render is
        listed in the step's "errors" ([{"field": "steps[0].body", "reason"}]), not only the first.

        A template that trips a bound of its render (time, size) must change before it can run at all: once
        every step is rendered, InvalidInput is raised naming each such field (`steps[0].body`). `definition`,
        when given, is rendered instead of the draft (e.g. the published version's, for a backfill's examples).
    `real`: the sample is a real row (workflow_preview_sample), so a step skipped for a recipient without the
    channel's address lists nothing else: for this row nothing else would render. A made-up sample lists
    every template that cannot render even then, for the author to fix.
    """
    from apps.core.exceptions import InvalidInput
    from apps.core.templating import TemplateLimitError, TemplateRenderError, render, render_budget
    from apps.deliveries.channels import channel_get
    from apps.deliveries.selectors import provider_configured

    from .conditions import first_holding
    from .definition.variables import template_fields

    context = {
        "data": sample.get("data", {}),
        "recipient": sample.get("recipient", {}),
        "workflow": {"key": workflow.key, "version": None},
        "request_id": "preview",
        "run_id": None,
        "timestamp": timezone.now().isoformat(),
        "steps": {},
    }
    for key in ("event", "row", "rows", "missing_ids", "batch"):
        if key in sample:
            context[key] = sample[key]
    context.update(sample.get("related") or {})
    organization_id = (sample.get("organization") or {}).get("id")
    # A run that fails before its steps (workflow_preview_outcome's error) sends nothing, through nobody.
    fails = bool(sample.get("links_error") or (sample.get("organization") or {}).get("error"))
    providers: dict[str, dict | None] = {}
    out: list[dict] = []
    bounds: dict[str, str] = {}  # path -> the bound a template trips

    def notify(step: dict, here: str, item: dict) -> None:
        channel = channel_get(step["channel"])
        config = {k: v for k, v in step.items() if k not in ("id", "type", "channel")}
        step_context = {**context, "step": step["id"]}
        item["channel"] = step["channel"]
        failed: dict[str | None, str] = {}  # field (None: not one field) -> why it cannot render
        rendered = None
        try:
            with render_budget():  # as the run would: the step's templates share one budget
                rendered = channel.render(config=config, context=step_context, product=workflow.product)
        except TemplateLimitError as exc:
            field = next((k for k, v in config.items() if v == exc.source), None)
            bounds[f"{here}.{field}" if field else here] = str(exc)
            failed[field] = ""  # said in `bounds`
        except TemplateRenderError as exc:
            item["error"] = str(exc)
            field = next((k for k, v in config.items() if v == exc.source), None)
            if field:
                failed[field] = str(exc)
        else:
            if rendered.skip_reason:
                item["skipped"] = rendered.skip_reason
            else:
                item.update(target=rendered.target, payload=sealed_masked(rendered.payload))
                if step["channel"] != "webhook" and not fails:  # a webhook goes to its endpoint, through no provider
                    if step["channel"] not in providers:  # one lookup per channel, however many steps use it
                        providers[step["channel"]] = provider_configured(
                            product_id=workflow.product_id, organization_id=organization_id, channel=step["channel"]
                        )
                    provider = dict(providers[step["channel"]] or {}) or None
                    sender = provider.pop("from_email", None) if provider else None
                    if sender and step["channel"] == "email":  # the From the recipient will see
                        item["payload"] = {**item["payload"], "from": sender}
                    item["provider"] = provider
        if rendered is None or (rendered.skip_reason and not real):
            # The channel stops at the first template that fails (or skips a recipient without the address
            # before the rest): each other template is rendered alone, so that every one to fix is listed.
            # `to` is left out: it failing means a recipient without the address, who is skipped.
            for field, html in template_fields(step["channel"]).items():
                if field in failed or field == "to" or not isinstance(config.get(field), str):
                    continue
                try:
                    with render_budget():
                        render(config[field], step_context, html=html)
                except TemplateLimitError as exc:
                    bounds[f"{here}.{field}"] = str(exc)
                except TemplateRenderError as exc:
                    failed[field] = str(exc)
        errors = [
            {"field": f"{here}.{field}", "reason": reason}
            for field in template_fields(step["channel"])
            if (reason := failed.get(field))
        ]
        if errors:
            item["errors"] = errors

    def walk(steps, path):
        for index, step in enumerate(steps):
            here = f"{path}[{index}]"
            item = {"step": step["id"], "path": here, "type": step["type"]}
            if step["type"] == "notify":
                notify(step, here, item)
            elif step["type"] == "branch":
                taken = first_holding([b["when"] for b in step["branches"]], context)
                item["taken"] = "otherwise" if taken is None else taken
            out.append(item)
            if step["type"] == "branch":
                for i, branch in enumerate(step["branches"]):
                    walk(branch["steps"], f"{here}.branches[{i}].steps")
                walk(step["otherwise"], f"{here}.otherwise")

    walk((definition or workflow.draft)["steps"], "steps")
    if bounds:
        raise InvalidInput(next(iter(bounds.values())), fields=bounds)
    return out


def workflow_preview_sample(*, workflow: Workflow, row_key=None, event_id=None, definition: dict | None = None) -> dict:
    """What a run of the draft's database trigger would see for a real row: the sample for workflow_preview.

    `row_key` is a key of the watched table (a value; a list of values for a composite key) and `event_id` a
    recorded event of the product (`evt_123` or 123); with both, the row is that event's row with this key;
    with the event alone, its first row. The row and its related rows are read by key from the customer's
    database as a run reads them (for_each: statement reads the event's rows), and the trigger's recipient
    mapping applied. Returns {"event", "row" (when found), "rows" and "missing_ids" (per statement),
    "related", "recipient" (when mapped), "organization" (when the trigger maps one: as
    workflow_preview_outcome shows it)}.

    Raises InvalidInput (the draft's trigger is not a database trigger, or has errors), NotFound (no such
    event or row) and CustomerDatabaseUnavailable.
    """
    from apps.connections.models import Event
    from apps.connections.rows import rows_read
    from apps.connections.services import CustomerDatabaseUnavailable
    from apps.connections.sources import EVENT_OF_OPERATION
    from apps.core.exceptions import InvalidInput, NotFound

    from .definition.checks import definition_normalize
    from .definition.format import Definition
    from .definition.paths import structure_check
    from .row_links import link_value, links_problem, organizations_route, recipient_from, related_read

    definition = definition or workflow.draft
    if (definition.get("trigger") or {}).get("type") != "database":
        raise InvalidInput(
            "row_key and event_id preview a database trigger's draft: this draft's trigger is not one.",
            field="row_key" if row_key is not None else "event_id",
        )
    model, errors = structure_check(Definition, definition)
    captures: list = []
    if model is not None:
        trigger, errors = definition_normalize(model, product=workflow.product, captures=captures)
        trigger = trigger["trigger"]
    if model is None or not captures:
        message = (
            "Fix the draft's trigger first."
            if definition is workflow.draft
            else "The published version's trigger no longer fits the table: publish a corrected draft first."
        )
        raise InvalidInput(message, fields={k: " ".join(v) for k, v in errors.items()})
    rows_from = captures[0][1]
    event = None
    if event_id is not None:
        number = str(event_id).removeprefix("evt_")
        # An event of this trigger's own connection and table: another table's keys would name other rows.
        event = (
            Event.objects.filter(
                connection__product=workflow.product,
                connection_id=trigger["connection"],
                table_name=rows_from["table"],
                id=int(number),
            ).first()
            if number.isascii() and number.isdigit() and len(number) <= 18
            else None
        )
        if event is None:
            raise NotFound(f"No event {event_id} of this trigger's table ({rows_from['table']}).", field="event_id")
        if row_key is None:
            if not event.ids:
                raise NotFound(f"Event {event_id} names no row.")
            row_key = event.ids[0]
        elif row_key not in event.ids:
            raise NotFound(f"Event {event_id} does not name the row {row_key}.", field="row_key")
    elif row_key is None:
        raise InvalidInput("Name a row_key, an event_id, or both.")
    from apps.connections.models import Connection

    connection = Connection.objects.get(id=trigger["connection"], product=workflow.product)
    key_columns = list(rows_from["key"])
    composite = len(key_columns) > 1
    if composite and not (isinstance(row_key, list) and len(row_key) == len(key_columns)):
        raise InvalidInput(
            f"A key of {rows_from['table']} is a list of {len(key_columns)} values, one per key column "
            f"({', '.join(key_columns)}).",
            field="row_key",
        )
    per_row = trigger.get("for_each", "row") == "row"
    ids = [row_key] if per_row or event is None else event.ids
    try:
        rows, missing = rows_read(connection=connection, rows_from=rows_from, ids=ids)
    except psycopg.errors.DataError as exc:  # not a value of the key's type
        raise InvalidInput(
            f"Not a key of {rows_from['table']}: {str(exc).strip().splitlines()[0]}", field="row_key"
        ) from None
    except psycopg.Error as exc:
        raise CustomerDatabaseUnavailable.from_error(exc) from exc
    try:
        row = rows[0] if per_row and rows else None
        related = related_read(connection=connection, trigger=trigger, rows=[row])[0] if per_row else {}
    except psycopg.Error as exc:
        raise CustomerDatabaseUnavailable.from_error(exc) from exc
    if per_row and row is None:
        raise NotFound(f"No row with key {row_key} in {rows_from['table']}.", field="row_key")
    events = trigger.get("events") or ["row.updated"]
    sample: dict = {
        "event": {
            "id": f"evt_{event.id}" if event else None,
            "type": EVENT_OF_OPERATION[event.op] if event else events[0],
            "table": rows_from["table"],
            "ids": [row_key] if per_row else ids,
            "occurred_at": (event.captured_at if event else timezone.now()).isoformat(),
        },
        "related": {name: found for name, found in related.items() if found is not None},
    }
    if per_row:
        sample["row"] = row
    else:
        sample["rows"], sample["missing_ids"] = rows, missing
        if len(ids) == 1 and rows:
            sample["row"] = rows[0]
    recipient = recipient_from(trigger, row=row, related=related) if per_row else None
    if recipient is not None:
        sample["recipient"] = recipient
    problem = links_problem(trigger, row=row, related=related, key=row_key) if per_row else ""
    if problem:
        sample["links_error"] = problem
    path = trigger.get("organization") if per_row else None
    if path and not problem:
        value = link_value(path, row=row, related=related)
        [(organization, error)] = organizations_route(product_id=workflow.product_id, items=[(path, value)])
        sample["organization"] = (
            preview_organization(organization)
            if organization is not None
            else {"external_id": None if value is None else str(value), "error": error}
        )
    return sample


def preview_organization(organization) -> dict:
    """An organization as a preview's sample and answer show it: {"id", "external_id", "name", "sandbox"}."""
    return {
        "id": str(organization.id),
        "external_id": organization.external_id,
        "name": organization.name,
        "sandbox": organization.sandbox,
    }


def workflow_preview_outcome(*, workflow: Workflow, sample: dict) -> dict:
    """What happens to a run of `sample` as a whole, beside its rendered steps (workflow_preview):
    {"held": whether its messages wait for review (the workflow, its product or the row's organization is
    sandboxed), "organization" (when the sample routes to one: {"id", "external_id", "name", "sandbox"}, or
    {"external_id", "error"} when the row names no organization), "error" (when the run would fail before
    its first step is done, and be escalated)}."""
    organization = sample.get("organization")
    outcome: dict = {
        "held": bool(workflow.sandbox or workflow.product.sandbox or (organization and organization.get("sandbox")))
    }
    if organization is not None:
        outcome["organization"] = organization
    problem = sample.get("links_error") or (organization or {}).get("error")
    if problem:
        outcome["error"] = f"The run would fail at its first step, and be escalated: {problem}"
    return outcome


# --- Operators' actions (the admin enqueues them: publishing may install a trigger in a customer database)


def workflow_publish_request(*, workflow: Workflow, actor: str) -> None:
    """Queue publishing the workflow's draft; the outcome (published or why not) lands in the audit log and
    on the queued action."""
    _request(workflow, "workflow.publish", actor, requested_at=timezone.now().isoformat())


def workflow_unpublish_request(*, workflow: Workflow, actor: str) -> None:
    """Queue unpublishing the workflow (runs already started finish); see workflow_unpublish."""
    _request(workflow, "workflow.unpublish", actor)


def workflow_backfill_request(*, workflow: Workflow, actor: str) -> None:
    """Queue a backfill of every existing row of the workflow's table (its published version, at low
    priority; apps.runs.triggers.backfill.workflow_backfill_queued)."""
    _request(workflow, "workflow.backfill", actor)


def _request(workflow: Workflow, name: str, actor: str, **args) -> None:
    from apps.core.actions import action_request

    # Actions are ordered by the workflow's id; audit rows name workflows by key, like every other.
    action_request(
        name=name,
        target_type="workflow",
        target_id=workflow.id,
        audit_target_id=workflow.key,
        args={"workflow_id": workflow.id, **args},
        actor=actor,
        product_id=workflow.product_id,
    )


def workflow_publish_queued(*, workflow_id: int, actor: str, requested_at: str | None = None) -> dict:
    """Publish as queued by an operator. Repeat-safe: a version this operator published since asking is
    the outcome (a worker that died after publishing does not publish twice). A refusal (an invalid draft,
    a database that refused the trigger) is audited, where the operator who asked sees it, and raised."""
    from apps.core.exceptions import ApplicationError

    workflow = Workflow.objects.filter(id=workflow_id).first()
    if workflow is None:
        return {"published": None}
    done = (
        WorkflowVersion.objects.filter(
            workflow=workflow, published_by=actor, published_at__gte=datetime.fromisoformat(requested_at)
        )
        .order_by("-version")
        .first()
        if requested_at
        else None
    )
    if done is not None:
        return {"published": done.version}
    try:
        return {"published": workflow_publish(workflow=workflow, actor=actor).version}
    except ApplicationError as exc:
        audit_record(
            action="workflow.publish_failed",
            target_type="workflow",
            target_id=workflow.key,
            product_id=workflow.product_id,
            actor=actor,
            data={"error": exc.message, "fields": exc.fields},
        )
        raise


def workflow_unpublish_queued(*, workflow_id: int, actor: str) -> dict:
    """Unpublish as queued by an operator (repeat-safe: unpublishing twice changes nothing)."""
    workflow = Workflow.objects.filter(id=workflow_id).first()
    if workflow is not None:
        workflow_unpublish(workflow=workflow, actor=actor)
    return {"unpublished": workflow is not None}


def _columns_read(trigger: dict) -> tuple[tuple[str, str], ...]:
    """The (schema.table, column) pairs a database trigger's links read by name: its reference columns, its
    recipient and organization paths."""
    from .row_links import trigger_links

    links = trigger_links(trigger)
    related = links.get("related") or {}
    pairs = {(trigger["table"], link["column"]) for link in related.values()}
    recipient = links.get("recipient") or {}
    paths = [p for f, p in recipient.items() if f != "properties"] + list((recipient.get("properties") or {}).values())
    if links.get("organization"):
        paths.append(links["organization"])
    for path in paths:
        root, _, column = path.partition(".")
        table = trigger["table"] if root == "row" else related.get(root, {}).get("table")
        if table:
            pairs.add((table, column))
    return tuple(sorted(pairs))


def workflow_capture_uses(*, connection) -> list:
    """The captures the connection's published workflows use, oldest version first (a capture-users function,
    see apps/connections/consumers.py)."""
    from apps.connections.consumers import CaptureUse

    return [
        CaptureUse(
            kind="workflows",
            label=key,
            capture=capture,
            spec=spec,
            related=tuple(
                (link["table"], link["key"]) for link in ((definition["trigger"].get("related") or {}).values())
            ),
            columns=_columns_read(definition["trigger"]),
        )
        for key, capture, spec, definition in WorkflowVersion.objects.filter(
            connection=connection, workflow__published_version=F("id")
        )
        .exclude(capture="")
        .order_by("id")
        .values_list("workflow__key", "capture", "capture_spec", "definition")
    ]
