"""What the structure cannot say, checked on a definition whose structure is valid (`format.Definition`),
each part turned into what is stored (ids and defaults filled in, durations in seconds):

- step ids: assigned as `step-N` (its position in the workflow) where absent, unique in the workflow; at most
  MAX_TOTAL_STEPS steps, branches included, and branches nest at most MAX_NESTING deep;
- a database trigger: against the product's connection and the customer's table as it is
  (apps.connections.sources.row_source_validate);
- a notify step: by its channel's own rules (template syntax and bounds, the webhook endpoint exists in the
  product: `Channel.StepConfig`);
- conditions: the paths they read (`conditions.data_condition_validate`);
- the retry policy: against the service's defaults (settings).

Errors are collected by path, as the structure's are (`steps[1].webhook`, `trigger.table`).
"""

from __future__ import annotations

from typing import Any

import psycopg
from django.conf import settings
from rest_framework.exceptions import ValidationError

from apps.core.exceptions import flatten_errors
from apps.core.ids import uuid_or_none
from apps.deliveries.channels import channel_get

from ..conditions import data_condition_validate
from .format import (
    MAX_NESTING,
    MAX_TOTAL_STEPS,
    NAME,
    ApiTrigger,
    Batch,
    Branch,
    DatabaseTrigger,
    Definition,
    Retry,
    StepBase,
    Tracking,
    WaitForCondition,
    WaitForDuration,
    WaitUntil,
)


class _Walk:
    """What the check of one definition carries along: the product, the ids seen, the errors by path."""

    def __init__(self, product) -> None:
        self.product = product
        self.ids: set[str] = set()
        self.errors: dict[str, list[str]] = {}

    def error(self, path: str, reason: str) -> None:
        self.errors.setdefault(path, []).append(reason)

    def merge(self, errors: dict) -> None:
        for path, reasons in errors.items():
            self.errors.setdefault(path, []).extend(str(r) for r in reasons)


def definition_normalize(
    model: Definition, *, product, captures: list | None = None
) -> tuple[dict, dict[str, list[str]]]:
    """(the definition as stored, {path: [reasons]}) for a structurally valid definition. A database trigger
    appends (Capture, rows_from) to `captures` when a list is given; reading the customer's catalog may raise
    CustomerDatabaseUnavailable."""
    walk = _Walk(product)
    trigger = _trigger(model.trigger, walk, captures)
    steps = _steps(model.steps, "steps", walk, depth=0)
    return {
        "trigger": trigger,
        "steps": steps,
        "retry": _retry(model.retry, walk),
        "tracking": _tracking(model.tracking),
    }, walk.errors


def _trigger(trigger, walk: _Walk, captures: list | None) -> dict:
    """A row change in a connected database takes the same source format as row-event webhook subscriptions,
    checked against the table as it is; the capture it needs is added to `captures`."""
    if isinstance(trigger, ApiTrigger):
        return {"type": "api"}
    from apps.connections.models import Connection
    from apps.connections.sources import row_source_validate

    source = trigger.model_dump(
        by_alias=True, exclude_unset=True, exclude={"type", "for_each", "related", "recipient", "organization"}
    )
    connection_id = uuid_or_none(source.get("connection"))
    connection = (
        Connection.objects.filter(product=walk.product, id=connection_id).first() if connection_id is not None else None
    )
    if connection is None:
        walk.error("trigger.connection", "No connection with this id in this product.")
        return {"type": "database"}
    rows_from: dict = {}
    try:
        normalized, capture = row_source_validate(connection=connection, source=source, rows_from=rows_from)
    except ValidationError as exc:
        for field, reasons in exc.detail.items():
            # row_source_validate names fields `source.<field>`: here they live under the trigger.
            here = "trigger" + field.removeprefix("source") if field.startswith("source") else f"trigger.{field}"
            walk.merge({here: reasons})
        return {"type": "database"}
    links = _row_links(trigger, connection, normalized, walk)
    if links is None:
        return {"type": "database"}
    if captures is not None:
        captures.append((capture, rows_from))
    return {"type": "database", **normalized, "for_each": trigger.for_each, **links}


# Names a run's templates already use: a related table cannot take one.
_RESERVED = (
    "data",
    "recipient",
    "workflow",
    "request_id",
    "run_id",
    "timestamp",
    "steps",
    "step",
    "event",
    "row",
    "rows",
    "missing_ids",
    "batch",
)


def _row_links(trigger: DatabaseTrigger, connection, normalized: dict, walk: _Walk) -> dict | None:
    """The trigger's related tables, recipient mapping and organization column, checked against the
    customer's catalog: what to store ({} when it has none), or None when they have errors (in `walk`)."""
    from apps.connections.related import row_links_validate
    from apps.connections.services import CustomerDatabaseUnavailable

    related = {name: link.model_dump(exclude_none=True) for name, link in (trigger.related or {}).items()}
    recipient = trigger.recipient.model_dump(exclude_none=True) if trigger.recipient is not None else {}
    properties = recipient.pop("properties", {})
    paths = {f"recipient.{field}": path for field, path in recipient.items()}
    paths |= {f"recipient.properties.{name}": path for name, path in properties.items()}
    if trigger.organization is not None:
        paths["organization"] = trigger.organization
    if not related and not paths:
        return {}
    errors = len(walk.errors)
    for name in related:
        if name in _RESERVED or not NAME.fullmatch(name):
            walk.error(
                f"trigger.related.{name}",
                f"A lower-case name (letters, digits, '_') other than: {', '.join(_RESERVED)}.",
            )
    if (related or recipient or properties or trigger.organization is not None) and trigger.for_each != "row":
        walk.error(
            "trigger.for_each",
            "Related rows, a recipient or an organization read from the row need one run per row: set for_each to row.",
        )
    elif (recipient or properties or trigger.organization is not None) and set(trigger.events or ()) & {
        "row.deleted",
        "relation.removed",
    }:
        walk.error(
            "trigger.events",
            "A deleted row cannot be read, so it names no recipient or organization: watch row.deleted in a "
            "workflow of its own, without recipient and organization.",
        )
    if len(walk.errors) > errors:
        return None
    try:
        stored, found = row_links_validate(
            connection=connection, table=normalized["table"], related=related, paths=paths
        )
    except psycopg.Error as exc:
        raise CustomerDatabaseUnavailable.from_error(exc) from exc
    if found:
        walk.merge({f"trigger.{field}": reasons for field, reasons in found.items()})
        return None
    links: dict = {}
    if stored:
        links["related"] = stored
    if recipient or properties:
        links["recipient"] = {**recipient, **({"properties": properties} if properties else {})}
    if trigger.organization is not None:
        links["organization"] = trigger.organization
    return links


def _steps(steps: list[StepBase], path: str, walk: _Walk, *, depth: int) -> list[dict]:
    out: list[dict] = []
    for index, step in enumerate(steps):
        here = f"{path}[{index}]"
        step_id = step.id if step.id is not None else f"step-{len(walk.ids) + 1}"
        if step_id in walk.ids:
            walk.error(f"{here}.id", f"Duplicate step id '{step_id}'.")
        walk.ids.add(step_id)
        if len(walk.ids) > MAX_TOTAL_STEPS:
            walk.error(here, f"At most {MAX_TOTAL_STEPS} steps in a workflow, branches included.")
            return out
        if isinstance(step, Branch) and depth >= MAX_NESTING:
            walk.error(here, f"Branches nest at most {MAX_NESTING} deep.")
            continue
        if isinstance(step, Branch):
            out.append(_branch(step, step_id, here, walk, depth))
        elif isinstance(step, (WaitForDuration, WaitUntil, WaitForCondition)):
            out.append(_wait(step, step_id, here, walk))
        elif isinstance(step, Batch):
            out.append(
                {"id": step_id, "type": "batch", "key": step.key, "window": step.window, "max_items": step.max_items}
            )
        else:
            out.append(_notify(step, step_id, here, walk))
    return out


def _notify(step, step_id: str, here: str, walk: _Walk) -> dict:
    """The channel's own rules, and its normalization (defaults such as `to`)."""
    fields = step.model_dump(exclude={"id", "type", "channel"}, exclude_unset=True)
    config = channel_get(step.channel).step_config(fields, product=walk.product)
    if not config.is_valid():
        for item in flatten_errors(config.errors, here):
            walk.error(item["field"] or here, item["reason"])
        return {"id": step_id, "type": "notify", "channel": step.channel, **fields}
    return {"id": step_id, "type": "notify", "channel": step.channel, **config.validated_data}


def _condition(condition, path: str, walk: _Walk) -> dict:
    as_given = condition.model_dump(by_alias=True, exclude_unset=True)
    walk.merge(data_condition_validate(as_given, path=path))
    return as_given


def _wait(step, step_id: str, here: str, walk: _Walk) -> dict:
    out: dict[str, Any] = {"id": step_id, "type": "wait"}
    if isinstance(step, WaitForDuration):
        out["duration"] = step.duration
    elif isinstance(step, WaitUntil):
        out["until"] = step.until
        if step.offset:  # no offset (or zero): none is stored
            out["offset"] = step.offset
    else:
        out["condition"] = _condition(step.condition, f"{here}.condition", walk)
        out["timeout"] = step.timeout
        out["every"] = step.every or 60
    return out


def _branch(step: Branch, step_id: str, here: str, walk: _Walk, depth: int) -> dict:
    branches = []
    for index, case in enumerate(step.branches):
        where = f"{here}.branches[{index}]"
        when = _condition(case.when, f"{where}.when", walk)
        # An empty block is allowed: "in this case, nothing".
        branches.append({"when": when, "steps": _steps(case.steps, f"{where}.steps", walk, depth=depth + 1)})
    otherwise = _steps(step.otherwise or [], f"{here}.otherwise", walk, depth=depth + 1)
    return {"id": step_id, "type": "branch", "branches": branches, "otherwise": otherwise}


def _retry(retry: Retry | None, walk: _Walk) -> dict:
    """The policy of the workflow's steps and deliveries, as given: what is left out follows the channel's
    default schedule when the run sends (apps.deliveries.backoff.retry_schedule), so that a change of the
    service's defaults reaches every workflow that did not choose otherwise."""
    if retry is None:
        return {}
    policy = {
        key: getattr(retry, key)
        for key in ("schedule", "max_attempts", "backoff", "max_backoff")
        if getattr(retry, key) is not None
    }
    if "schedule" in policy:
        for key in ("max_attempts", "backoff", "max_backoff"):
            if key in policy:
                walk.error(
                    f"retry.{key}",
                    "A schedule already says how many attempts and when: leave this out, or leave out the schedule.",
                )
    exponential = {"backoff": settings.ROWBELL_RETRY_BASE_SECONDS, "max_backoff": settings.ROWBELL_RETRY_MAX_SECONDS}
    if "backoff" in policy or "max_backoff" in policy:
        both = {**exponential, **policy}
        if both["max_backoff"] < both["backoff"]:
            if "max_backoff" in policy:
                walk.error("retry.max_backoff", "Must be at least the back-off.")
            else:
                policy["max_backoff"] = policy["backoff"]
    return policy


def _tracking(tracking: Tracking | None) -> dict:
    """Email engagement tracking, both off unless asked for."""
    if tracking is None:
        return {"opens": False, "clicks": False}
    return {"opens": tracking.opens, "clicks": tracking.clicks}
