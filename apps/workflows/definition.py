"""The workflow definition format, and its validation as a whole.

    {
      "trigger": {"type": "api"},
      "steps": [
        {"id": "hook", "type": "notify", "channel": "webhook", "webhook": "<endpoint id>"},
        {"type": "notify", "channel": "email", "subject": "Hi {{ recipient.name }}", "body": "..."}
      ]
    }

Every step is an object with a `type` and an optional `id` (unique in the workflow; assigned as
`step-N` from its position when absent). Triggers are `api` (the trigger endpoint) and `database`
(a row change in a connected database, the same source format as row-event webhooks:
`{"type": "database", "connection": "<id>", "table": "public.orders", "events": ["row.created"]}`).
New step types (`wait`, `branch`, `batch`) are new entries in the tables below: a `branch` carries nested step lists, which
`_steps_validate` already walks recursively. Errors name the exact place: `steps[1].subject`.
"""

from __future__ import annotations

import re
import uuid
from typing import Callable

from rest_framework.exceptions import ValidationError

from apps.core.exceptions import flatten_errors
from apps.deliveries.channels import channel_get, channel_kinds

MAX_STEPS = 100
STEP_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def _trigger_api(trigger: dict, path: str, errors: dict, product, captures: list | None = None) -> dict:
    for key in trigger:
        if key != "type":
            errors.setdefault(f"{path}.{key}", []).append("Unknown field for an 'api' trigger.")
    return {"type": "api"}


def _trigger_database(trigger: dict, path: str, errors: dict, product, captures: list | None = None) -> dict:
    """A row change in a connected database: the same source format as row-event webhook subscriptions
    (connection, table, and events with optional columns, or a classification, or a relation through a
    join table), checked against the table as it is. The capture it needs is added to `captures`."""
    from apps.connections.models import Connection
    from apps.connections.sources import row_source_validate

    source = {k: v for k, v in trigger.items() if k != "type"}
    connection = None
    connection_id = _uuid_or_none(source.get("connection"))
    if connection_id is not None:
        connection = Connection.objects.filter(product=product, id=connection_id).first()
    if connection is None:
        errors.setdefault(f"{path}.connection", []).append("No connection with this id in this product.")
        return {"type": "database"}
    try:
        normalized, capture = row_source_validate(connection=connection, source=source)
    except ValidationError as exc:
        for field, reasons in exc.detail.items():
            # row_source_validate names fields `source.<field>`: here they live under the trigger.
            here = path + field.removeprefix("source") if field.startswith("source") else f"{path}.{field}"
            errors.setdefault(here, []).extend(str(r) for r in reasons)
        return {"type": "database"}
    if captures is not None:
        captures.append(capture)
    return {"type": "database", **normalized}


def _uuid_or_none(value):
    try:
        return uuid.UUID(str(value))
    except ValueError:
        return None


TRIGGER_TYPES: dict[str, Callable] = {"api": _trigger_api, "database": _trigger_database}


def _step_notify(step: dict, path: str, errors: dict, product) -> dict:
    kind = step.get("channel")
    if not isinstance(kind, str) or kind not in channel_kinds():
        errors.setdefault(f"{path}.channel", []).append(f"Must be one of: {', '.join(channel_kinds())}.")
        return step
    channel = channel_get(kind)
    fields = {k: v for k, v in step.items() if k not in ("id", "type", "channel")}
    config = channel.step_config(fields, product=product)
    known = set(config.fields)
    for key in fields:
        if key not in known:
            errors.setdefault(f"{path}.{key}", []).append(f"Unknown field for a '{kind}' notify step.")
    if not config.is_valid():
        for item in flatten_errors(config.errors, path):
            errors.setdefault(item["field"] or path, []).append(item["reason"])
        return step
    return {"id": step["id"], "type": "notify", "channel": kind, **config.validated_data}


STEP_TYPES: dict[str, Callable] = {"notify": _step_notify}


def _steps_validate(steps, path: str, errors: dict, ids: set, product) -> list:
    if not isinstance(steps, list):
        errors.setdefault(path, []).append("Must be a list of steps.")
        return []
    if not steps:
        errors.setdefault(path, []).append("A workflow needs at least one step.")
    if len(steps) > MAX_STEPS:
        errors.setdefault(path, []).append(f"At most {MAX_STEPS} steps.")
        return []
    out = []
    for index, step in enumerate(steps):
        here = f"{path}[{index}]"
        if not isinstance(step, dict):
            errors.setdefault(here, []).append("Must be an object.")
            continue
        step = dict(step)
        step_id = step.get("id", f"step-{len(ids) + 1}")
        if not isinstance(step_id, str) or not STEP_ID.match(step_id):
            errors.setdefault(f"{here}.id", []).append("1 to 64 letters, digits, '-' or '_'.")
        elif step_id in ids:
            errors.setdefault(f"{here}.id", []).append(f"Duplicate step id '{step_id}'.")
        ids.add(step_id)
        step["id"] = step_id
        kind = step.get("type")
        if not isinstance(kind, str) or kind not in STEP_TYPES:
            errors.setdefault(f"{here}.type", []).append(f"Must be one of: {', '.join(sorted(STEP_TYPES))}.")
            continue
        out.append(STEP_TYPES[kind](step, here, errors, product))
    return out


def definition_validate(definition, *, product, captures: list | None = None) -> dict:
    """Validate a whole definition; return it normalized (ids assigned, defaults filled in).

    Raises a ValidationError whose keys are paths into the definition. A `database` trigger is checked
    against the customer's table (which may raise CustomerDatabaseUnavailable); the capture it needs
    is appended to `captures` when a list is given.
    """
    errors: dict[str, list[str]] = {}
    if not isinstance(definition, dict):
        raise ValidationError({"definition": ["Must be an object."]})
    for key in definition:
        if key not in ("trigger", "steps"):
            errors.setdefault(key, []).append("Unknown field.")
    trigger = definition.get("trigger", {"type": "api"})
    normalized_trigger = {}
    if not isinstance(trigger, dict):
        errors.setdefault("trigger", []).append("Must be an object.")
    elif not isinstance(trigger.get("type"), str) or trigger.get("type") not in TRIGGER_TYPES:
        errors.setdefault("trigger.type", []).append(f"Must be one of: {', '.join(sorted(TRIGGER_TYPES))}.")
    else:
        normalized_trigger = TRIGGER_TYPES[trigger["type"]](trigger, "trigger", errors, product, captures)
    if "steps" not in definition:
        errors.setdefault("steps", []).append("This field is required.")
        steps = []
    else:
        steps = _steps_validate(definition["steps"], "steps", errors, set(), product)
    if errors:
        raise ValidationError(errors)
    return {"trigger": normalized_trigger, "steps": steps}
