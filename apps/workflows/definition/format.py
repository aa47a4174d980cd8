"""The workflow definition format, declared once as pydantic models.

From these models come:

- the structural check of every definition: types, required fields, and unknown fields refused at every
  level, with errors at the same paths as always (`steps[1].subject`, `trigger.connection`; see `paths`);
- the definition's JSON Schema, served at `GET /api/v1/workflows/schema.json` (`json_schema`);
- the typed bodies of the workflow calls in the OpenAPI description (apps/workflows/openapi.py).

What needs the database, the settings or the templates' meaning (a connection and its table, a webhook
endpoint, a channel's own rules, template syntax and variables, the retry defaults) is checked after the
structure, on the model made here (`checks`, `variables`).

A notify step's fields are those its channel declares (`Channel.StepConfig`, apps/deliveries/channels): its
model is made from them, so a new channel needs no change here.

Each value says what it expects when it is refused or missing (`values`).
"""

from __future__ import annotations

import re
import uuid
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal, TypeAlias, TypeVar, Union

from pydantic import BaseModel, BeforeValidator, ConfigDict, Discriminator, Field, Tag, create_model
from pydantic_core import PydanticCustomError
from rest_framework import serializers

from apps.connections.conditions import OPS
from apps.connections.sources import MUTATION_EVENTS, RELATION_EVENTS, TRANSITIONS
from apps.deliveries.channels import channel_get, channel_kinds
from apps.deliveries.channels.base import TemplateField

from .values import DottedPath, Duration, IntFrom, OneOf, Says, SignedDuration, is_object, refusing

MAX_STEPS = 100  # in one list of steps
MAX_TOTAL_STEPS = 500  # in a workflow, branches included
MAX_NESTING = 10  # branches inside branches
MAX_BRANCHES = 20
STEP_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
KEY = re.compile(r"^[-a-zA-Z0-9_]{1,100}$")
NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
STEP_TYPES = ("batch", "branch", "notify", "wait")
WAIT_MODES = ("duration", "until", "condition")
TRIGGER_TYPES = ("api", "database")
# How many runs a database trigger starts for a statement: one per affected row (`row` is that row), or one for
# the whole statement (`rows`), as PostgreSQL's own FOR EACH ROW / FOR EACH STATEMENT triggers.
FOR_EACH = ("row", "statement")
EVENTS = tuple(MUTATION_EVENTS) + tuple(RELATION_EVENTS)

# Some types of the format are made by calls (a Literal of a constant's values, `IntFrom(1, 25)`,
# `DottedPath(...)`): pydantic is given the types made, the type checker (which cannot read a call as a type)
# the kind of value each one holds.
if TYPE_CHECKING:
    _T = TypeVar("_T")
    # A field that may be left out (None then) but not sent as null: pydantic is given X, so that null is
    # refused and the schema does not offer it; the type checker X | None, what the attribute may hold.
    Omittable: TypeAlias = _T | None
    Op: TypeAlias = str
    Transition: TypeAlias = str
    ForEach: TypeAlias = str
    Event: TypeAlias = str
    TimestampPath: TypeAlias = str
    BatchKey: TypeAlias = str
    MaxItems: TypeAlias = int
    MaxAttempts: TypeAlias = int
else:

    class Omittable:
        """`Omittable[X]` is X: see above."""

        def __class_getitem__(cls, item):
            return item

    Op = Literal[tuple(sorted(OPS))]
    Transition = Literal[tuple(TRANSITIONS)]
    ForEach = Literal[FOR_EACH]
    Event = Literal[EVENTS]
    TimestampPath = DottedPath("A dotted path to a timestamp, e.g. data.appointment_at.")
    BatchKey = DottedPath("A dotted path to the batching key, e.g. data.customer_id.")
    MaxItems = IntFrom(1, 10_000)
    MaxAttempts = IntFrom(1, 25)


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
    op: Annotated[Op, OneOf(*sorted(OPS))]
    value: Annotated[
        Any,
        Field(
            description="A string, number or boolean; a list of 1 to 100 of them for `in`; "
            "none for is_null and is_not_null."
        ),
    ] = None


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
    kinds: dict[type, str] = {AllOf: "and", AnyOf: "or"}
    return kinds.get(type(value), "comparison")


def _tag_field(field: str):
    """A union's tag: the value of `field`, in the input (a dict) or in a model (when it is dumped)."""
    return lambda value: value.get(field) if isinstance(value, dict) else getattr(value, field, None)


Condition = Annotated[
    Annotated[Comparison, Tag("comparison")] | Annotated[AllOf, Tag("and")] | Annotated[AnyOf, Tag("or")],
    Discriminator(_condition_kind),
    is_object(),
]


# --- Triggers ------------------------------------------------------------------------------------------


class ApiTrigger(FormatModel):
    """Started by `POST /api/v1/trigger` (the default)."""

    noun: ClassVar[str] = "an 'api' trigger"
    type: Literal["api"]


class Classification(FormatModel):
    """A named predicate over the table's columns; an event when a row enters or leaves it."""

    noun: ClassVar[str] = "a classification"
    name: Annotated[
        str,
        Field(pattern=NAME.pattern),
        refusing(
            lambda v: isinstance(v, str) and NAME.fullmatch(v) is not None,
            "name",
            "A lower-case name: letters, digits and '_'.",
        ),
    ]
    predicate: Condition
    on: Annotated[Transition, OneOf(*TRANSITIONS)] = "both"


# `row.<column>` or `<related name>.<column>`: a column of the changed row or of a related row.
ROW_PATH = re.compile(r"^[a-z_][a-z0-9_]{0,62}\.[^.\s]{1,63}$")
_ROW_PATH_SAYS = "`row.<column>` or `<related name>.<column>`, e.g. row.email or customer.email."


def _row_path(description: str):
    return Annotated[
        str,
        Field(pattern=ROW_PATH.pattern, description=description),
        refusing(lambda v: isinstance(v, str) and ROW_PATH.fullmatch(v) is not None, "row_path", _ROW_PATH_SAYS),
    ]


if TYPE_CHECKING:
    RowPath: TypeAlias = str
else:
    RowPath = _row_path(_ROW_PATH_SAYS)


class RelatedTable(FormatModel):
    """A table whose row a run reads beside its own: the one whose `key` equals the changed row's `column`
    (e.g. `orders.customer_id` -> `customers.id`). Read by key with the connection's own user."""

    noun: ClassVar[str] = "a related table"
    table: Annotated[
        str,
        Field(min_length=1, max_length=200, description="schema.table (or a table in public)."),
        Says("schema.table (or a table in public)."),
    ]
    column: Annotated[
        str,
        Field(min_length=1, max_length=63, description="The changed row's column that holds the related row's key."),
        Says("The changed row's column that holds the related row's key."),
    ]
    key: Omittable[
        Annotated[
            str,
            Field(
                min_length=1,
                max_length=63,
                description=(
                    "The related table's column that `column` names; by default the column its foreign key "
                    "references, else the table's one-column primary key."
                ),
            ),
        ]
    ] = None


class RecipientFromRow(FormatModel):
    """Who a per-row run notifies, read from its row or a related row: each field a `row.<column>` or
    `<related>.<column>` path."""

    noun: ClassVar[str] = "a recipient mapping"
    id: Omittable[RowPath] = None
    email: Omittable[RowPath] = None
    phone: Omittable[RowPath] = None
    push_tokens: Omittable[RowPath] = None
    name: Omittable[RowPath] = None
    locale: Omittable[RowPath] = None
    timezone: Omittable[RowPath] = None
    properties: Omittable[
        Annotated[dict[str, RowPath], Field(max_length=50, description="Custom recipient properties, by name.")]
    ] = None


class DatabaseTrigger(FormatModel):
    """A row change in a connected database: `events` (with `columns` for row.updated), or a
    `classification`, or `through` a join table (and the foreign key `column` to follow)."""

    noun: ClassVar[str] = "a 'database' trigger"
    type: Literal["database"]
    connection: Annotated[
        str, Field(json_schema_extra={"format": "uuid"}, description="A connection's id."), Says("A connection's id.")
    ]
    table: Annotated[
        str,
        Field(min_length=1, max_length=200, description="schema.table (or a table in public)."),
        Says("schema.table (or a table in public)."),
    ]
    events: Omittable[
        Annotated[
            list[Event],
            Field(min_length=1),
            refusing(
                lambda v: isinstance(v, list) and v and all(isinstance(e, str) and e in EVENTS for e in v),
                "events",
                f"A non-empty list of: {', '.join(EVENTS)}.",
            ),
        ]
    ] = None
    columns: Omittable[Annotated[list[str], Field(description="Only for row.updated: changes of these columns.")]] = (
        None
    )
    classification: Omittable[Classification] = None
    through: Omittable[Annotated[str, Field(min_length=1, description="The join table, as schema.table.")]] = None
    column: Omittable[
        Annotated[str, Field(min_length=1, description="With `through`: the join table's foreign key.")]
    ] = None
    for_each: Annotated[
        ForEach,
        OneOf(*FOR_EACH),
        Field(
            description=(
                "`row` (the default): one run per affected row, whose templates see that row as `row`. "
                "`statement`: one run per statement, whose templates see its rows as `rows` (and `row` when "
                "it changed one)."
            )
        ),
    ] = "row"
    related: Omittable[
        Annotated[
            dict[str, RelatedTable],
            Field(max_length=10, description="Related rows a run reads, by the name templates use (`customer`)."),
        ]
    ] = None
    recipient: Omittable[RecipientFromRow] = None
    organization: Omittable[
        Annotated[
            RowPath,
            Field(description="The column holding the external id of the organization that owns the row."),
        ]
    ] = None


Trigger = Annotated[
    Annotated[ApiTrigger, Tag("api")] | Annotated[DatabaseTrigger, Tag("database")],
    Discriminator(_tag_field("type")),
    OneOf(*TRIGGER_TYPES, field="type", says=f"Must be one of: {', '.join(TRIGGER_TYPES)}."),
    is_object(),
]


# --- Steps ---------------------------------------------------------------------------------------------


class StepBase(FormatModel):
    id: Omittable[
        Annotated[
            str,
            Field(
                pattern=STEP_ID.pattern,
                description=(
                    "Unique in the workflow; `step-N` (its position) when absent. Later templates read what the "
                    "step produced as `steps.<id>`."
                ),
            ),
            refusing(
                lambda v: isinstance(v, str) and STEP_ID.fullmatch(v) is not None,
                "step_id",
                "1 to 64 letters, digits, '-' or '_'.",
            ),
        ]
    ] = None


class WaitForDuration(StepBase):
    """Wait this long."""

    noun: ClassVar[str] = "a wait with a duration"
    type: Literal["wait"]
    duration: Duration


class WaitUntil(StepBase):
    """Wait until the timestamp (ISO 8601) at a dotted path, moved by `offset`; already past: no wait."""

    noun: ClassVar[str] = "a wait until a time"
    type: Literal["wait"]
    until: TimestampPath
    offset: Omittable[SignedDuration] = None


class WaitForCondition(StepBase):
    """Wait until the condition holds, checked now and every `every` (default 60 s), for at most `timeout`;
    `steps.<id>.timed_out` says which."""

    noun: ClassVar[str] = "a wait for a condition"
    type: Literal["wait"]
    condition: Condition
    timeout: Duration
    every: Omittable[Duration] = None


def _wait_mode(value) -> str | None:
    if not isinstance(value, dict):
        kinds: dict[type, str] = {WaitForDuration: "duration", WaitUntil: "until", WaitForCondition: "condition"}
        return kinds.get(type(value))
    modes = [m for m in WAIT_MODES if m in value]
    return modes[0] if len(modes) == 1 else None


Wait = Annotated[
    Annotated[WaitForDuration, Tag("duration")]
    | Annotated[WaitUntil, Tag("until")]
    | Annotated[WaitForCondition, Tag("condition")],
    Discriminator(_wait_mode),
    refusing(
        lambda v: _wait_mode(v) is not None, "wait_mode", "A wait takes exactly one of: duration, until, condition."
    ),
]


class Batch(StepBase):
    """Runs reaching it with the same key within `window` are collected: the first continues once the window
    closes, with all of them in `batch.items` (and `batch.count`); the others end here (a digest)."""

    noun: ClassVar[str] = "a 'batch' step"
    type: Literal["batch"]
    key: BatchKey
    window: Duration
    max_items: MaxItems = 1000


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
    branches: Annotated[
        list[Case],
        Field(min_length=1, max_length=MAX_BRANCHES),
        refusing(
            lambda v: isinstance(v, list) and 1 <= len(v) <= MAX_BRANCHES,
            "branches",
            f"A list of 1 to {MAX_BRANCHES} {{when, steps}} objects.",
        ),
    ]
    otherwise: Omittable[Annotated[list[Step], Field(max_length=MAX_STEPS), _step_list(allow_empty=True)]] = None


def _drf_field(field: serializers.Field) -> tuple[Any, Any]:
    """A notify step field as its channel declares it (a DRF serializer field), as a pydantic field."""
    extra: dict = {}
    kind: Any  # a type, made from the field
    says = str(field.help_text or "")
    if isinstance(field, serializers.CharField):
        if isinstance(field, TemplateField):
            says = (says + " " if says else "") + "A Jinja2 template."
        kind = Annotated[str, Field(max_length=field.max_length, min_length=None if field.allow_blank else 1)]
    elif isinstance(field, serializers.UUIDField):
        kind = Annotated[
            str,
            Field(json_schema_extra={"format": "uuid"}),
            refusing(lambda v: isinstance(v, str) and _is_uuid(v), "uuid", "Must be a valid UUID."),
        ]
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
    # The union's tags, then the channel's fields. Typed as Any: pydantic's stubs take a class as a field's
    # type, not a special form such as Literal.
    tags: dict[str, Any] = {"type": (Literal["notify"], ...), "channel": (Literal[kind], ...)}
    fields: dict[str, Any] = {name: _drf_field(field) for name, field in channel.StepConfig().fields.items()}
    model = create_model(
        f"{kind.capitalize()}Notify",
        __base__=StepBase,
        __module__=__name__,
        __doc__=(channel.__doc__ or "").strip(),
        **tags,
        **fields,
    )
    model.noun = f"{'an' if kind[0] in 'aeiou' else 'a'} '{kind}' notify step"
    return model


NOTIFY_MODELS: dict[str, type[StepBase]] = {kind: _notify_model(kind) for kind in channel_kinds()}

# A union of the channels' models, made at run time: to the type checker, what they all are.
if TYPE_CHECKING:
    Notify: TypeAlias = StepBase
else:
    Notify = Annotated[
        Union[tuple(Annotated[model, Tag(kind)] for kind, model in NOTIFY_MODELS.items())],  # noqa: UP007 (built from a tuple)
        Discriminator(_tag_field("channel")),
        OneOf(*NOTIFY_MODELS, field="channel", says=f"Must be one of: {', '.join(NOTIFY_MODELS)}."),
    ]

Step = Annotated[
    Annotated[Notify, Tag("notify")]
    | Annotated[Wait, Tag("wait")]
    | Annotated[Branch, Tag("branch")]
    | Annotated[Batch, Tag("batch")],
    Discriminator(_tag_field("type")),
    OneOf(*STEP_TYPES, field="type", says=f"Must be one of: {', '.join(STEP_TYPES)}."),
    is_object(),
]


# --- The workflow ----------------------------------------------------------------------------------------


class Retry(FormatModel):
    """The retry policy of the workflow's deliveries and of its steps' transient errors. Left out, each channel
    follows its default schedule (webhooks: 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h) and a webhook its
    endpoint's own, if it has one. `schedule` names the waits before each retry; `max_attempts` alone cuts
    (or extends) the default schedule; `backoff` and `max_backoff` ask for exponential back-off with jitter
    instead (apps.deliveries.backoff)."""

    noun: ClassVar[str] = "the retry policy"
    schedule: Omittable[
        Annotated[
            list[Duration],
            Field(
                min_length=0,
                max_length=24,
                description='The wait before each retry, e.g. ["5s", "5m", "30m", "2h"]: one attempt more '
                "than waits; [] for one attempt only.",
            ),
        ]
    ] = None
    max_attempts: Omittable[MaxAttempts] = None
    backoff: Omittable[Duration] = None
    max_backoff: Omittable[Duration] = None


class Tracking(FormatModel):
    """Email engagement tracking: an open pixel and signed redirects for links, in HTML emails."""

    noun: ClassVar[str] = "tracking"
    opens: bool = False
    clicks: bool = False


class Definition(FormatModel):
    """A workflow: what starts it and its steps."""

    noun: ClassVar[str] = "a workflow"
    trigger: Annotated[Trigger, Field(description='{"type": "api"} (the default) or a database trigger.')] = ApiTrigger(
        type="api"
    )
    steps: Annotated[
        list[Step], Field(min_length=1, max_length=MAX_STEPS), Says("A list of steps."), _step_list(allow_empty=False)
    ]
    retry: Omittable[Retry] = None
    tracking: Omittable[Tracking] = None


_KEY_SAYS = "1 to 100 letters, digits, '-' or '_'."


class WorkflowUpdate(Definition):
    """A workflow's draft, replaced whole (`PUT /api/v1/workflows/{key}`). The body that created it may be
    sent again as it is: its `key`, if sent, must be the path's (a key is never changed)."""

    key: Omittable[
        Annotated[
            str,
            Field(pattern=KEY.pattern, description="The path's key, if sent: a PUT does not change a key."),
            Says(_KEY_SAYS),
            refusing(lambda v: isinstance(v, str) and KEY.fullmatch(v) is not None, "key", _KEY_SAYS),
        ]
    ] = None
    name: Omittable[
        Annotated[str, Field(max_length=200, description="A name for people; a PUT without it keeps it.")]
    ] = None
    sandbox: Omittable[
        Annotated[
            bool,
            Field(description=("Hold its deliveries for review instead of sending them; a PUT without it keeps it.")),
        ]
    ] = None


class WorkflowCreate(WorkflowUpdate):
    """A new workflow (`POST /api/v1/workflows`): created as a draft; triggers use it once published."""

    key: Annotated[  # required here, optional on a PUT
        str,
        Field(pattern=KEY.pattern, description="Its name in the API, unique in the product."),
        Says(_KEY_SAYS),
        refusing(lambda v: isinstance(v, str) and KEY.fullmatch(v) is not None, "key", _KEY_SAYS),
    ]


DEFINITION_FIELDS = tuple(Definition.model_fields)

for _model in (AllOf, AnyOf, Case, Branch, Definition, WorkflowUpdate, WorkflowCreate):
    _model.model_rebuild()
