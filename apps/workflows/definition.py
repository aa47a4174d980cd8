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
from typing import Callable

from rest_framework.exceptions import ValidationError

from apps.core.exceptions import flatten_errors
from apps.core.ids import uuid_or_none
from apps.core.text import unstorable_find
from apps.deliveries.channels import channel_get, channel_kinds

MAX_STEPS = 100
MAX_TOTAL_STEPS = 500
MAX_NESTING = 10
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
    connection_id = uuid_or_none(source.get("connection"))
    if connection_id is not None:
        connection = Connection.objects.filter(product=product, id=connection_id).first()
    if connection is None:
        errors.setdefault(f"{path}.connection", []).append("No connection with this id in this product.")
        return {"type": "database"}
    rows_from: dict = {}
    try:
        normalized, capture = row_source_validate(connection=connection, source=source, rows_from=rows_from)
    except ValidationError as exc:
        for field, reasons in exc.detail.items():
            # row_source_validate names fields `source.<field>`: here they live under the trigger.
            here = path + field.removeprefix("source") if field.startswith("source") else f"{path}.{field}"
            errors.setdefault(here, []).extend(str(r) for r in reasons)
        return {"type": "database"}
    if captures is not None:
        captures.append((capture, rows_from))
    return {"type": "database", **normalized}


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


DURATION = re.compile(r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")
MAX_DURATION = 366 * 24 * 3600


def duration_seconds(value) -> int | float | None:
    """Seconds in '90s', '15m', '2h', '1d12h' or a plain number of seconds; None if not a duration."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return value if 0 < value <= MAX_DURATION else None
    if not isinstance(value, str) or not value:
        return None
    match = DURATION.match(value.strip())
    if not match or not any(match.groups()):
        return None
    days, hours, minutes, seconds = (int(g or 0) for g in match.groups())
    total = days * 86400 + hours * 3600 + minutes * 60 + seconds
    return total if 0 < total <= MAX_DURATION else None


def _duration(step: dict, key: str, path: str, errors: dict, *, required: bool = True, signed: bool = False):
    value = step.get(key)
    if value is None and not required:
        return None
    negative = signed and ((isinstance(value, str) and value.startswith("-"))
                           or (isinstance(value, (int, float)) and not isinstance(value, bool) and value < 0))
    if negative:
        value = value[1:] if isinstance(value, str) else -value
    seconds = duration_seconds(value)
    if seconds is None:
        errors.setdefault(f"{path}.{key}", []).append(
            "A duration such as '90s', '15m', '2h', '1d12h' (at most 366 days)" + (", optionally negative." if signed
                                                                                    else "."))
        return None
    return -seconds if negative else seconds


def _unknown(step: dict, allowed: set, path: str, errors: dict, kind: str) -> None:
    for key in step:
        if key not in allowed | {"id", "type"}:
            errors.setdefault(f"{path}.{key}", []).append(f"Unknown field for a '{kind}' step.")


def _step_wait(step: dict, path: str, errors: dict, product) -> dict:
    """Wait a duration, until a timestamp in the data (with an optional offset), or until a condition
    holds (checked every `every`, giving up after `timeout`)."""
    from .conditions import PATH, data_condition_validate

    modes = [m for m in ("duration", "until", "condition") if m in step]
    if len(modes) != 1:
        errors.setdefault(path, []).append("A wait takes exactly one of: duration, until, condition.")
        return step
    out = {"id": step["id"], "type": "wait"}
    if modes == ["duration"]:
        _unknown(step, {"duration"}, path, errors, "wait")
        out["duration"] = _duration(step, "duration", path, errors)
    elif modes == ["until"]:
        _unknown(step, {"until", "offset"}, path, errors, "wait")
        if not isinstance(step["until"], str) or not PATH.fullmatch(step["until"]):
            errors.setdefault(f"{path}.until", []).append("A dotted path to a timestamp, e.g. data.appointment_at.")
        out["until"] = step["until"]
        if step.get("offset") not in (None, 0):  # no offset: none is stored (a zero is not a duration)
            out["offset"] = _duration(step, "offset", path, errors, signed=True)
    else:
        _unknown(step, {"condition", "timeout", "every"}, path, errors, "wait")
        for field, reasons in data_condition_validate(step["condition"], path=f"{path}.condition").items():
            errors.setdefault(field, []).extend(reasons)
        out["condition"] = step["condition"]
        out["timeout"] = _duration(step, "timeout", path, errors)
        out["every"] = _duration(step, "every", path, errors, required=False) or 60
    return out


def _step_branch(step: dict, path: str, errors: dict, product, ids: set) -> dict:
    """The first branch whose `when` holds runs its steps; `otherwise` (optional) runs if none does."""
    from .conditions import data_condition_validate

    _unknown(step, {"branches", "otherwise"}, path, errors, "branch")
    branches = step.get("branches")
    if not isinstance(branches, list) or not branches or len(branches) > 20:
        errors.setdefault(f"{path}.branches", []).append("A list of 1 to 20 {when, steps} objects.")
        return step
    out = []
    for index, branch in enumerate(branches):
        here = f"{path}.branches[{index}]"
        if not isinstance(branch, dict) or set(branch) != {"when", "steps"}:
            errors.setdefault(here, []).append("An object with exactly: when, steps.")
            continue
        for field, reasons in data_condition_validate(branch["when"], path=f"{here}.when").items():
            errors.setdefault(field, []).extend(reasons)
        # An empty block is allowed: "in this case, nothing".
        out.append({"when": branch["when"], "steps": _steps_validate(branch["steps"], f"{here}.steps", errors, ids,
                                                                     product, allow_empty=True)})
    otherwise = []
    if "otherwise" in step:
        otherwise = _steps_validate(step["otherwise"], f"{path}.otherwise", errors, ids, product, allow_empty=True)
    return {"id": step["id"], "type": "branch", "branches": out, "otherwise": otherwise}


def _step_batch(step: dict, path: str, errors: dict, product) -> dict:
    """Collect the runs that reach this step with the same key during `window`; the first one continues
    once, with all of them in `batch.items`, the others end there (a digest)."""
    from .conditions import PATH

    _unknown(step, {"key", "window", "max_items"}, path, errors, "batch")
    if not isinstance(step.get("key"), str) or not PATH.fullmatch(step["key"]):
        errors.setdefault(f"{path}.key", []).append("A dotted path to the batching key, e.g. data.customer_id.")
    max_items = step.get("max_items", 1000)
    if isinstance(max_items, bool) or not isinstance(max_items, int) or not 1 <= max_items <= 10_000:
        errors.setdefault(f"{path}.max_items", []).append("An integer from 1 to 10000.")
    return {"id": step["id"], "type": "batch", "key": step.get("key"), "window": _duration(
        step, "window", path, errors), "max_items": max_items}


STEP_TYPES: dict[str, Callable] = {"notify": _step_notify, "wait": _step_wait, "branch": _step_branch,
                                   "batch": _step_batch}
NESTING = {"branch"}  # step types that hold step lists of their own (their validators take `ids`)

def _retry_validate(retry, errors: dict) -> dict:
    """The workflow's retry policy for its steps and deliveries: attempts and exponential back-off."""
    from django.conf import settings

    policy = {"max_attempts": settings.ROWBELL_DELIVERY_MAX_ATTEMPTS,
              "backoff": settings.ROWBELL_RETRY_BASE_SECONDS, "max_backoff": settings.ROWBELL_RETRY_MAX_SECONDS}
    if retry is None:
        return policy
    if not isinstance(retry, dict):
        errors.setdefault("retry", []).append('An object: {"max_attempts", "backoff", "max_backoff"}.')
        return policy
    for key in retry:
        if key not in ("max_attempts", "backoff", "max_backoff"):
            errors.setdefault(f"retry.{key}", []).append("Unknown field.")
    if "max_attempts" in retry:
        value = retry["max_attempts"]
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 25:
            errors.setdefault("retry.max_attempts", []).append("An integer from 1 to 25.")
        else:
            policy["max_attempts"] = value
    for key in ("backoff", "max_backoff"):
        if key in retry:
            seconds = _duration(retry, key, "retry", errors)
            if seconds:
                policy[key] = seconds
    if policy["max_backoff"] < policy["backoff"]:
        if "max_backoff" in retry:
            errors.setdefault("retry.max_backoff", []).append("Must be at least the back-off.")
        else:
            policy["max_backoff"] = policy["backoff"]
    return policy


def _steps_validate(steps, path: str, errors: dict, ids: set, product, *, allow_empty: bool = False) -> list:
    if not isinstance(steps, list):
        errors.setdefault(path, []).append("Must be a list of steps.")
        return []
    if not steps and not allow_empty:
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
        if not isinstance(step_id, str) or not STEP_ID.fullmatch(step_id):
            errors.setdefault(f"{here}.id", []).append("1 to 64 letters, digits, '-' or '_'.")
            step_id = f"invalid-{index}-{len(ids)}"  # keeps the count of steps honest
        elif step_id in ids:
            errors.setdefault(f"{here}.id", []).append(f"Duplicate step id '{step_id}'.")
        ids.add(step_id)
        if len(ids) > MAX_TOTAL_STEPS:
            errors.setdefault(here, []).append(f"At most {MAX_TOTAL_STEPS} steps in a workflow, branches included.")
            return out
        step["id"] = step_id
        kind = step.get("type")
        if not isinstance(kind, str) or kind not in STEP_TYPES:
            errors.setdefault(f"{here}.type", []).append(f"Must be one of: {', '.join(sorted(STEP_TYPES))}.")
            continue
        if kind in NESTING:
            if here.count(".branches[") + here.count(".otherwise[") >= MAX_NESTING:
                errors.setdefault(here, []).append(f"Branches nest at most {MAX_NESTING} deep.")
                continue
            out.append(STEP_TYPES[kind](step, here, errors, product, ids))
        else:
            out.append(STEP_TYPES[kind](step, here, errors, product))
    return out


def definition_validate(definition, *, product, captures: list | None = None) -> dict:
    """Validate a whole definition; return it normalized (ids assigned, defaults filled in).

    Raises a ValidationError whose keys are paths into the definition. A `database` trigger is checked
    against the customer's table (which may raise CustomerDatabaseUnavailable); the capture it needs
    and where its rows are read (Capture, {"table", "key"}) are appended to `captures` when a list is given.
    """
    errors: dict[str, list[str]] = {}
    if not isinstance(definition, dict):
        raise ValidationError({"definition": ["Must be an object."]})
    # Whatever door it came through (API, admin form), text PostgreSQL cannot store is refused first,
    # before the customer database is asked about any of it.
    unstorable = unstorable_find(definition)
    if unstorable:
        raise ValidationError({unstorable[0]: [unstorable[1]]})
    for key in definition:
        if key not in ("trigger", "steps", "retry", "tracking"):
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
    retry = _retry_validate(definition.get("retry"), errors)
    tracking = _tracking_validate(definition.get("tracking"), errors)
    if errors:
        raise ValidationError(errors)
    return {"trigger": normalized_trigger, "steps": steps, "retry": retry, "tracking": tracking}


def _tracking_validate(tracking, errors: dict) -> dict:
    """Email engagement tracking: {"opens": bool, "clicks": bool}, both off unless asked for."""
    if tracking is None:
        return {"opens": False, "clicks": False}
    if not isinstance(tracking, dict):
        errors.setdefault("tracking", []).append('An object: {"opens": true, "clicks": true}.')
        return {}
    for key in tracking:
        if key not in ("opens", "clicks"):
            errors.setdefault(f"tracking.{key}", []).append("Unknown field.")
    for key in ("opens", "clicks"):
        if not isinstance(tracking.get(key, False), bool):
            errors.setdefault(f"tracking.{key}", []).append("Must be true or false.")
    return {"opens": tracking.get("opens") is True, "clicks": tracking.get("clicks") is True}
