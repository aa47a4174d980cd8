"""The workflow definition format, declared once as pydantic models.

From these models come:

- the structural check of every definition: types, required fields, and unknown fields refused at every
  level, with errors at the same paths as always (`steps[1].subject`, `trigger.connection`; see `paths`);
- the definition's JSON Schema, served at `GET /api/v1/workflows/schema.json` (`workflow_json_schema`);
- the typed bodies of the workflow calls in the OpenAPI description (apps/workflows/openapi.py).

What needs the database, the settings or the templates' meaning (a connection and its table, a webhook
endpoint, a channel's own rules, template syntax and variables, the retry defaults) is checked after the
structure, on the model made here (`checks`, `variables`).

A notify step's fields are those its channel declares (`Channel.StepConfig`, apps/deliveries/channels): its
model is made from them, so a new channel needs no change here.

Messages say what is expected, in the words the API has always used: a validator that refuses a value
raises a `PydanticCustomError` with the sentence to show; `Says` attaches to a field what to say when it is
missing. An error whose context has a `field` is about that field of the object it is raised on
(`trigger.type`, `retry.max_backoff`).
"""

from __future__ import annotations

import re
import uuid
from typing import Annotated, Any, ClassVar, Literal, Union

from pydantic import (BaseModel, BeforeValidator, ConfigDict, Discriminator, Field, PlainValidator, Tag,
                      WithJsonSchema, create_model)
from pydantic_core import PydanticCustomError
from rest_framework import serializers

from apps.connections.conditions import OPS
from apps.connections.sources import MUTATION_EVENTS, RELATION_EVENTS, TRANSITIONS
from apps.deliveries.channels import channel_get, channel_kinds
from apps.deliveries.channels.base import TemplateField

from ..conditions import PATH

MAX_STEPS = 100  # in one list of steps
MAX_TOTAL_STEPS = 500  # in a workflow, branches included
MAX_NESTING = 10  # branches inside branches
MAX_BRANCHES = 20
STEP_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
KEY = re.compile(r"^[-a-zA-Z0-9_]{1,100}$")
NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
DURATION = re.compile(r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")
MAX_DURATION = 366 * 24 * 3600
STEP_TYPES = ("batch", "branch", "notify", "wait")
WAIT_MODES = ("duration", "until", "condition")
TRIGGER_TYPES = ("api", "database")
EVENTS = tuple(MUTATION_EVENTS) + tuple(RELATION_EVENTS)
DURATION_SAYS = "A duration such as '90s', '15m', '2h', '1d12h' (at most 366 days)"


class Says:
    """What a field expects, in words: said when the field is missing (`Annotated[..., Says("...")]`)."""

    __slots__ = ("message",)

    def __init__(self, message: str):
        self.message = message


def _refusing(test, kind: str, message: str, **context) -> BeforeValidator:
    """A validator that lets through what `test` accepts and refuses the rest with `message`."""
    def validate(value):
        if not test(value):
            raise PydanticCustomError(kind, message, context or None)
        return value
    return BeforeValidator(validate)


def duration_seconds(value) -> int | float | None:
    """Seconds in '90s', '15m', '2h', '1d12h' or a plain number of seconds; None if not a duration (zero,
    negative, over 366 days, or not one of these)."""
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


def _duration(value):
    seconds = duration_seconds(value)
    if seconds is None:
        raise PydanticCustomError("duration", DURATION_SAYS + ".")
    return seconds


def _signed_duration(value):
    if value == 0 and not isinstance(value, bool):
        return 0  # no offset
    negative = ((isinstance(value, str) and value.startswith("-"))
                or (isinstance(value, (int, float)) and not isinstance(value, bool) and value < 0))
    seconds = duration_seconds((value[1:] if isinstance(value, str) else -value) if negative else value)
    if seconds is None:
        raise PydanticCustomError("duration", DURATION_SAYS + ", optionally negative.")
    return -seconds if negative else seconds


_DURATION_TEXT = r"^(?:\d+d)?(?:\d+h)?(?:\d+m)?(?:\d+s)?$"
# Given as text or seconds, stored as seconds: what a definition comes back with validates again.
Duration = Annotated[Union[int, float], PlainValidator(_duration), Says(DURATION_SAYS + "."), WithJsonSchema({
    "anyOf": [{"type": "string", "pattern": _DURATION_TEXT, "minLength": 2},
              {"type": "number", "minimum": 0, "maximum": MAX_DURATION}],
    "description": DURATION_SAYS + ", or a number of seconds; answers give seconds."})]
SignedDuration = Annotated[Union[int, float], PlainValidator(_signed_duration), WithJsonSchema({
    "anyOf": [{"type": "string", "pattern": "^-?" + _DURATION_TEXT[1:], "minLength": 2},
              {"type": "number", "minimum": -MAX_DURATION, "maximum": MAX_DURATION}],
    "description": DURATION_SAYS + ", optionally negative (before the time), or seconds."})]


def IntFrom(low: int, high: int):  # noqa: N802 (a type, in use)
    """An integer from `low` to `high` (not a boolean, not 3.0)."""
    says = f"An integer from {low} to {high}."
    return Annotated[int, Field(ge=low, le=high), Says(says), _refusing(
        lambda v: isinstance(v, int) and not isinstance(v, bool) and low <= v <= high, "int_range", says)]


def DottedPath(says: str):  # noqa: N802 (a type, in use)
    """A dotted path into what steps see (`data.customer_id`)."""
    return Annotated[str, Field(pattern=PATH.pattern, description=says), Says(says), _refusing(
        lambda v: isinstance(v, str) and PATH.fullmatch(v) is not None, "dotted_path", says)]


def OneOf(*choices: str, field: str | None = None, says: str | None = None):  # noqa: N802 (a type, in use)
    """One of these strings. With `field`, the check runs on the object that holds the field (a union's tag:
    `type`, `channel`) and the error names the field."""
    says = says or f"One of: {', '.join(choices)}."
    if field is None:
        return _refusing(lambda v: isinstance(v, str) and v in choices, "choice", says)
    return _refusing(lambda v: isinstance(v, dict) and isinstance(v.get(field), str) and v[field] in choices,
                     "choice", says, field=field)


def _is_object(kind: str = "an object") -> BeforeValidator:
    return _refusing(lambda v: isinstance(v, dict), "object", f"Must be {kind}.")


class FormatModel(BaseModel):
    """A JSON object of the format: strict types (no "5" for 5, no 1 for true), unknown fields refused."""

    model_config = ConfigDict(extra="forbid", strict=True)
    noun: ClassVar[str] = "this object"  # in "Unknown field for <noun>."


# --- Conditions (branch `when`, wait `condition`, a classification's `predicate`) ----------------------


class Comparison(FormatModel):
    """A comparison of the value at `column` (in steps: a dotted path such as `data.plan`, starting with
    data, recipient, event, row, rows, steps, batch or workflow; in a predicate: a column of the table)."""

    noun: ClassVar[str] = "a comparison"
    column: Annotated[str, Field(min_length=1, max_length=700)]
    op: Annotated[Literal[tuple(sorted(OPS))], OneOf(*sorted(OPS))]
    value: Annotated[Any, Field(description="A string, number or boolean; a list of 1 to 100 of them for `in`; "
                                            "none for is_null and is_not_null.")] = None


class AllOf(FormatModel):
    """Holds when every condition of the list holds."""

    noun: ClassVar[str] = "an 'and' condition"
    all_of: Annotated[list[Condition], Field(alias="and", min_length=1, max_length=50)]


class AnyOf(FormatModel):
    """Holds when any condition of the list holds."""

    noun: ClassVar[str] = "an 'or' condition"
    any_of: Annotated[list[Condition], Field(alias="or", min_length=1, max_length=50)]


def _condition_kind(value) -> str:
    if isinstance(value, dict):
        return "and" if "and" in value else "or" if "or" in value else "comparison"
    return "comparison"


Condition = Annotated[Union[Annotated[Comparison, Tag("comparison")], Annotated[AllOf, Tag("and")],
                            Annotated[AnyOf, Tag("or")]], Discriminator(_condition_kind), _is_object()]


# --- Triggers ------------------------------------------------------------------------------------------


class ApiTrigger(FormatModel):
    """Started by `POST /api/v1/trigger` (the default)."""

    noun: ClassVar[str] = "an 'api' trigger"
    type: Literal["api"]


class Classification(FormatModel):
    """A named predicate over the table's columns; an event when a row enters or leaves it."""

    noun: ClassVar[str] = "a classification"
    name: Annotated[str, Field(pattern=NAME.pattern), _refusing(
        lambda v: isinstance(v, str) and NAME.match(v) is not None, "name",
        "A lower-case name: letters, digits and '_'.")]
    predicate: Condition
    on: Annotated[Literal[tuple(TRANSITIONS)], OneOf(*TRANSITIONS)] = "both"


class DatabaseTrigger(FormatModel):
    """A row change in a connected database: `events` (with `columns` for row.updated), or a
    `classification`, or `through` a join table (and the foreign key `column` to follow)."""

    noun: ClassVar[str] = "a 'database' trigger"
    type: Literal["database"]
    connection: Annotated[str, Field(json_schema_extra={"format": "uuid"}, description="A connection's id."),
                          Says("A connection's id.")]
    table: Annotated[str, Field(min_length=1, max_length=200, description="schema.table (or a table in public)."),
                     Says("schema.table (or a table in public).")]
    events: Annotated[list[Literal[EVENTS]], Field(min_length=1), _refusing(
        lambda v: isinstance(v, list) and v and all(isinstance(e, str) and e in EVENTS for e in v), "events",
        f"A non-empty list of: {', '.join(EVENTS)}.")] = None
    columns: Annotated[list[str], Field(description="Only for row.updated: changes of these columns.")] = None
    classification: Classification = None
    through: Annotated[str, Field(min_length=1, description="The join table, as schema.table.")] = None
    column: Annotated[str, Field(min_length=1, description="With `through`: the join table's foreign key.")] = None


Trigger = Annotated[Union[Annotated[ApiTrigger, Tag("api")], Annotated[DatabaseTrigger, Tag("database")]],
                    Discriminator(lambda v: v.get("type") if isinstance(v, dict) else None),
                    OneOf(*TRIGGER_TYPES, field="type", says=f"Must be one of: {', '.join(TRIGGER_TYPES)}."),
                    _is_object()]


# --- Steps ---------------------------------------------------------------------------------------------


class StepBase(FormatModel):
    id: Annotated[str, Field(pattern=STEP_ID.pattern, description=(
        "Unique in the workflow; `step-N` (its position) when absent. Later templates read what the step "
        "produced as `steps.<id>`.")), _refusing(lambda v: isinstance(v, str) and STEP_ID.fullmatch(v) is not None,
                                                 "step_id", "1 to 64 letters, digits, '-' or '_'.")] = None


class WaitForDuration(StepBase):
    """Wait this long."""

    noun: ClassVar[str] = "a wait with a duration"
    type: Literal["wait"]
    duration: Duration


class WaitUntil(StepBase):
    """Wait until the timestamp (ISO 8601) at a dotted path, moved by `offset`; already past: no wait."""

    noun: ClassVar[str] = "a wait until a time"
    type: Literal["wait"]
    until: DottedPath("A dotted path to a timestamp, e.g. data.appointment_at.")
    offset: SignedDuration = None


class WaitForCondition(StepBase):
    """Wait until the condition holds, checked now and every `every` (default 60 s), for at most `timeout`;
    `steps.<id>.timed_out` says which."""

    noun: ClassVar[str] = "a wait for a condition"
    type: Literal["wait"]
    condition: Condition
    timeout: Duration
    every: Duration = None


def _wait_mode(value) -> str | None:
    modes = [m for m in WAIT_MODES if m in value] if isinstance(value, dict) else []
    return modes[0] if len(modes) == 1 else None


Wait = Annotated[Union[Annotated[WaitForDuration, Tag("duration")], Annotated[WaitUntil, Tag("until")],
                       Annotated[WaitForCondition, Tag("condition")]], Discriminator(_wait_mode), _refusing(
    lambda v: _wait_mode(v) is not None, "wait_mode", "A wait takes exactly one of: duration, until, condition.")]


class Batch(StepBase):
    """Runs reaching it with the same key within `window` are collected: the first continues once the window
    closes, with all of them in `batch.items` (and `batch.count`); the others end here (a digest)."""

    noun: ClassVar[str] = "a 'batch' step"
    type: Literal["batch"]
    key: DottedPath("A dotted path to the batching key, e.g. data.customer_id.")
    window: Duration
    max_items: IntFrom(1, 10_000) = 1000


def _step_list(*, allow_empty: bool) -> BeforeValidator:
    def validate(value):
        if not isinstance(value, list):
            raise PydanticCustomError("steps", "Must be a list of steps.")
        if not value and not allow_empty:
            raise PydanticCustomError("steps", "A workflow needs at least one step.")
        if len(value) > MAX_STEPS:
            raise PydanticCustomError("steps", f"At most {MAX_STEPS} steps.")
        return value
    return BeforeValidator(validate)


class Case(FormatModel):
    """One way of a branch: its steps run when `when` holds (an empty list: nothing)."""

    noun: ClassVar[str] = "a branch's case"
    when: Condition
    steps: Annotated[list[Step], Field(max_length=MAX_STEPS), _step_list(allow_empty=True)]


class Branch(StepBase):
    """The first case whose `when` holds runs its steps, else `otherwise`; then the steps after the branch."""

    noun: ClassVar[str] = "a 'branch' step"
    type: Literal["branch"]
    branches: Annotated[list[Case], Field(min_length=1, max_length=MAX_BRANCHES), _refusing(
        lambda v: isinstance(v, list) and 1 <= len(v) <= MAX_BRANCHES, "branches",
        f"A list of 1 to {MAX_BRANCHES} {{when, steps}} objects.")]
    otherwise: Annotated[list[Step], Field(max_length=MAX_STEPS), _step_list(allow_empty=True)] = None


def _drf_field(field: serializers.Field) -> tuple[Any, Any]:
    """A notify step field as its channel declares it (a DRF serializer field), as a pydantic field."""
    extra: dict = {}
    says = str(field.help_text or "")
    if isinstance(field, serializers.CharField):
        if isinstance(field, TemplateField):
            says = (says + " " if says else "") + "A Jinja2 template" + (" (values are escaped)." if field.html
                                                                         else ".")
        kind = Annotated[str, Field(max_length=field.max_length, min_length=None if field.allow_blank else 1)]
    elif isinstance(field, serializers.UUIDField):
        kind = Annotated[str, Field(json_schema_extra={"format": "uuid"}), _refusing(
            lambda v: isinstance(v, str) and _is_uuid(v), "uuid", "Must be a valid UUID.")]
    elif isinstance(field, serializers.BooleanField):
        kind = bool
    elif isinstance(field, serializers.IntegerField):
        kind = Annotated[int, Field(ge=field.min_value, le=field.max_value)]
    elif isinstance(field, serializers.ChoiceField):
        kind = Literal[tuple(field.choices)]
    else:
        kind = Any
    if says:
        extra["description"] = says
    if field.required:
        return kind, Field(**extra)
    default = None if field.default is serializers.empty else field.default
    return kind, Field(default=default, **extra)


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def _notify_model(kind: str) -> type[StepBase]:
    channel = channel_get(kind)
    fields = {name: _drf_field(field) for name, field in channel.StepConfig().fields.items()}
    model = create_model(f"{kind.capitalize()}Notify", __base__=StepBase, __module__=__name__,
                         __doc__=(channel.__doc__ or "").strip(), type=(Literal["notify"], ...),
                         channel=(Literal[kind], ...), **fields)
    model.noun = f"{'an' if kind[0] in 'aeiou' else 'a'} '{kind}' notify step"
    return model


NOTIFY_MODELS: dict[str, type[StepBase]] = {kind: _notify_model(kind) for kind in channel_kinds()}

Notify = Annotated[Union[tuple(Annotated[model, Tag(kind)] for kind, model in NOTIFY_MODELS.items())],
                   Discriminator(lambda v: v.get("channel") if isinstance(v, dict) else None),
                   OneOf(*NOTIFY_MODELS, field="channel", says=f"Must be one of: {', '.join(NOTIFY_MODELS)}.")]

Step = Annotated[Union[Annotated[Notify, Tag("notify")], Annotated[Wait, Tag("wait")],
                       Annotated[Branch, Tag("branch")], Annotated[Batch, Tag("batch")]],
                 Discriminator(lambda v: v.get("type") if isinstance(v, dict) else None),
                 OneOf(*STEP_TYPES, field="type", says=f"Must be one of: {', '.join(STEP_TYPES)}."),
                 _is_object()]


# --- The workflow ----------------------------------------------------------------------------------------


class Retry(FormatModel):
    """The retry policy of the workflow's deliveries and of its steps' transient errors: exponential back-off
    with jitter. Absent fields take the service's defaults (8 attempts, 10 s, 6 h unless configured)."""

    noun: ClassVar[str] = "the retry policy"
    max_attempts: IntFrom(1, 25) = None
    backoff: Duration = None
    max_backoff: Duration = None


class Tracking(FormatModel):
    """Email engagement tracking: an open pixel and signed redirects for links, in HTML emails."""

    noun: ClassVar[str] = "tracking"
    opens: bool = False
    clicks: bool = False


class Definition(FormatModel):
    """A workflow: what starts it and its steps."""

    noun: ClassVar[str] = "a workflow"
    trigger: Annotated[Trigger, Field(description='{"type": "api"} (the default) or a database trigger.')] = \
        ApiTrigger(type="api")
    steps: Annotated[list[Step], Field(min_length=1, max_length=MAX_STEPS), Says("A list of steps."),
                     _step_list(allow_empty=False)]
    retry: Retry = None
    tracking: Tracking = None


class WorkflowUpdate(Definition):
    """A workflow's draft, replaced whole (`PUT /api/v1/workflows/{key}`)."""

    name: Annotated[str, Field(max_length=200, description="Unchanged when absent.")] = None
    sandbox: Annotated[bool, Field(description="Hold its deliveries for review instead of sending them.")] = None


class WorkflowCreate(WorkflowUpdate):
    """A new workflow (`POST /api/v1/workflows`): created as a draft; triggers use it once published."""

    key: Annotated[str, Field(pattern=KEY.pattern, description="Its name in the API, unique in the product."),
                   Says("1 to 100 letters, digits, '-' or '_'."), _refusing(
                       lambda v: isinstance(v, str) and KEY.match(v) is not None, "key",
                       "1 to 100 letters, digits, '-' or '_'.")]


DEFINITION_FIELDS = tuple(Definition.model_fields)

for _model in (AllOf, AnyOf, Case, Branch, Definition, WorkflowUpdate, WorkflowCreate):
    _model.model_rebuild()
