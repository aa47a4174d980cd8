"""The workflow definition format, and its validation as a whole.

    {
      "trigger": {"type": "api"},
      "steps": [
        {"id": "hook", "type": "notify", "channel": "webhook", "webhook": "<endpoint id>"},
        {"type": "notify", "channel": "email", "subject": "Hi {{ recipient.name }}", "body": "..."}
      ]
    }

Every step is an object with a `type` and an optional `id` (unique in the workflow; assigned as `step-N` from
its position when absent). Triggers are `api` (the trigger endpoint) and `database` (a row change in a connected
database, the same source format as row-event webhooks). Errors name the exact place: `steps[1].subject`.

The format is declared once, as pydantic models (`format`). A definition is checked in two passes, each
reporting every error it finds:

1. its structure (`format.Definition`, errors as paths by `paths`): types, required and unknown fields;
2. once the structure holds: what needs the database or the settings (`checks`: the connection and table of
   a database trigger, webhook endpoints, each channel's rules, conditions' paths, ids, the retry policy),
   and the templates' variables against what the trigger and the steps before provide (`variables`).
"""

from __future__ import annotations

from rest_framework.exceptions import ValidationError

from apps.core.text import unstorable_find

from .checks import definition_normalize
from .format import MAX_NESTING, MAX_STEPS, MAX_TOTAL_STEPS, Definition
from .paths import structure_check
from .values import duration_seconds
from .variables import template_variables_check

__all__ = ["MAX_NESTING", "MAX_STEPS", "MAX_TOTAL_STEPS", "definition_validate", "duration_seconds"]


def definition_validate(definition, *, product, captures: list | None = None) -> dict:
    """Validate a whole definition; return it normalized (ids assigned, defaults filled in, durations in
    seconds): {"trigger", "steps", "retry", "tracking"}.

    Raises a DRF ValidationError whose keys are paths into the definition (`steps[1].subject`), with every
    error of the first pass that finds any (the structure; then the database, the channels and the template
    variables). A `database` trigger is checked against the customer's table (which may raise
    CustomerDatabaseUnavailable); the capture it needs and where its rows are read (Capture, {"table", "key"})
    are appended to `captures` when a list is given.
    """
    if not isinstance(definition, dict):
        raise ValidationError({"definition": ["Must be an object."]})
    # Whatever door it came through (API, admin form), text PostgreSQL cannot store is refused first,
    # before the customer database is asked about any of it.
    unstorable = unstorable_find(definition)
    if unstorable:
        raise ValidationError({unstorable[0]: [unstorable[1]]})
    model, errors = structure_check(Definition, definition)
    if model is None:  # when the structure has errors
        raise ValidationError(errors)
    normalized, errors = definition_normalize(model, product=product, captures=captures)
    trigger = normalized["trigger"]
    for path, reasons in template_variables_check(
        trigger=trigger["type"],
        steps=normalized["steps"],
        for_each=trigger.get("for_each", "row"),
        related=tuple(trigger.get("related") or ()),
    ).items():
        errors.setdefault(path, []).extend(reasons)
    if errors:
        raise ValidationError(errors)
    return normalized
