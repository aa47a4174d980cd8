"""The kinds of values the definition format takes, each with the sentence that says what it expects.

A validator that refuses a value raises a `PydanticCustomError` whose message is that sentence, in the words
the API has always used; `Says` attaches to a field what to say when it is missing. An error whose context has
a `field` is about that field of the object it is raised on (`steps[0].type`).
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BeforeValidator, Field, PlainValidator, WithJsonSchema
from pydantic_core import PydanticCustomError

from apps.core.durations import DURATION_SAYS, MAX_DURATION, duration_seconds  # noqa: F401  (the format's)

from ..conditions import PATH


class Says:
    """What a field expects, in words: said when the field is missing (`Annotated[..., Says("...")]`)."""

    __slots__ = ("message",)

    def __init__(self, message: str):
        self.message = message


def refusing(test, kind: str, message: str, **context) -> BeforeValidator:
    """A validator that lets through what `test` accepts and refuses the rest with `message`."""

    def validate(value):
        if not test(value):
            raise PydanticCustomError(kind, message, context or None)
        return value

    return BeforeValidator(validate)


def _duration(value):
    seconds = duration_seconds(value)
    if seconds is None:
        raise PydanticCustomError("duration", DURATION_SAYS + ".")
    return seconds


def _signed_duration(value):
    if value == 0 and not isinstance(value, bool):
        return 0  # no offset
    negative = (isinstance(value, str) and value.startswith("-")) or (
        isinstance(value, (int, float)) and not isinstance(value, bool) and value < 0
    )
    seconds = duration_seconds((value[1:] if isinstance(value, str) else -value) if negative else value)
    if seconds is None:
        raise PydanticCustomError("duration", DURATION_SAYS + ", optionally negative.")
    return -seconds if negative else seconds


_DURATION_TEXT = r"^(?:\d+d)?(?:\d+h)?(?:\d+m)?(?:\d+s)?$"
# Given as text or seconds, stored as seconds: what a definition comes back with validates again.
Duration = Annotated[
    int | float,
    PlainValidator(_duration),
    Says(DURATION_SAYS + "."),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "pattern": _DURATION_TEXT, "minLength": 2},
                {"type": "number", "minimum": 0, "maximum": MAX_DURATION},
            ],
            "description": DURATION_SAYS + ", or a number of seconds; answers give seconds.",
        }
    ),
]
SignedDuration = Annotated[
    int | float,
    PlainValidator(_signed_duration),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "pattern": "^-?" + _DURATION_TEXT[1:], "minLength": 2},
                {"type": "number", "minimum": -MAX_DURATION, "maximum": MAX_DURATION},
            ],
            "description": DURATION_SAYS + ", optionally negative (before the time), or seconds.",
        }
    ),
]


def IntFrom(low: int, high: int):  # noqa: N802 (a type, in use)
    """An integer from `low` to `high` (not a boolean, not 3.0)."""
    says = f"An integer from {low} to {high}."
    return Annotated[
        int,
        Field(ge=low, le=high),
        Says(says),
        refusing(lambda v: isinstance(v, int) and not isinstance(v, bool) and low <= v <= high, "int_range", says),
    ]


def DottedPath(says: str):  # noqa: N802 (a type, in use)
    """A dotted path into what steps see (`data.customer_id`)."""
    return Annotated[
        str,
        Field(pattern=PATH.pattern, description=says),
        Says(says),
        refusing(lambda v: isinstance(v, str) and PATH.fullmatch(v) is not None, "dotted_path", says),
    ]


def OneOf(*choices: str, field: str | None = None, says: str | None = None):  # noqa: N802 (a type, in use)
    """One of these strings. With `field`, the check runs on the object that holds the field (a union's tag:
    `type`, `channel`) and the error names the field."""
    says = says or f"One of: {', '.join(choices)}."
    if field is None:
        return refusing(lambda v: isinstance(v, str) and v in choices, "choice", says)
    return refusing(
        lambda v: isinstance(v, dict) and isinstance(v.get(field), str) and v[field] in choices,
        "choice",
        says,
        field=field,
    )


def is_object(kind: str = "an object") -> BeforeValidator:
    """Refuses anything but a JSON object, before a union looks for its tag in it."""
    return refusing(lambda v: isinstance(v, dict), "object", f"Must be {kind}.")
