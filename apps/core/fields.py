"""Input fields that take a JSON value only in the type they name.

DRF's fields were made for HTML forms, where everything arrives as a string, so they convert:
`{"name": -2279}` becomes the name "-2279", `{"enabled": "no"}` becomes false, `{"port": "5432"}` and
`{"port": 5432.0}` become 5432, and a UUID field takes an integer. A JSON API that converts silently
accepts mistakes its callers cannot see. These fields refuse a value of another JSON type with an
error that names the type expected; query strings (a `QueryDict`, where every value is text) keep DRF's
conversions.

Use `strict.CharField(...)` etc. (`from apps.core import fields as strict`) wherever an API reads a JSON
body.
"""

from __future__ import annotations

from decimal import Decimal

from django.http import QueryDict
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from .exactjson import ExactEncoder

_JSON_TYPES = {
    str: "a string",
    bool: "true or false",
    int: "a number",
    float: "a number",
    Decimal: "a number",
    list: "a list",
    dict: "an object",
    type(None): "null",
}


def _json_type(value) -> str:
    return _JSON_TYPES.get(type(value), type(value).__name__)


class _Strict:
    """Refuses values whose Python type (as the JSON parser made it) is not in `accepts`."""

    accepts: tuple[type, ...] = (str,)
    refuses: tuple[type, ...] = ()
    expected = "a string"

    def to_internal_value(self, data):
        from_form = isinstance(getattr(self.root, "initial_data", None), QueryDict)
        if not from_form and (not isinstance(data, self.accepts) or isinstance(data, self.refuses)):
            raise serializers.ValidationError(f"Must be {self.expected}, not {_json_type(data)}.", code="invalid")
        return super().to_internal_value(data)


class CharField(_Strict, serializers.CharField):
    pass


class SlugField(_Strict, serializers.SlugField):
    pass


class RegexField(_Strict, serializers.RegexField):
    pass


class EmailField(_Strict, serializers.EmailField):
    pass


class URLField(_Strict, serializers.URLField):
    pass


class UUIDField(_Strict, serializers.UUIDField):
    expected = "a UUID string"


class ChoiceField(_Strict, serializers.ChoiceField):
    """A choice among strings; the error lists the valid choices."""

    def __init__(self, choices, **kwargs):
        super().__init__(choices, **kwargs)
        valid = ", ".join(f'"{choice}"' for choice in self.choices)
        self.error_messages["invalid_choice"] = f'"{{input}}" is not a valid choice; use one of {valid}.'


class IntegerField(_Strict, serializers.IntegerField):
    accepts = (int,)
    refuses = (bool,)
    expected = "a whole number"


class FloatField(_Strict, serializers.FloatField):
    accepts = (int, float, Decimal)
    refuses = (bool,)
    expected = "a number"


class BooleanField(_Strict, serializers.BooleanField):
    accepts = (bool,)
    expected = "true or false"


class JSONField(serializers.JSONField):
    """Any JSON value, numbers with every digit: a body read by apps.core.parsers.ExactJSONParser holds
    numbers with a fraction as Decimal, which DRF's JSONField (checking with the standard encoder) refuses."""

    def __init__(self, **kwargs):
        kwargs.setdefault("encoder", ExactEncoder)
        super().__init__(**kwargs)


@extend_schema_field(
    {
        "type": "array",
        "nullable": True,
        "maxItems": 24,
        "items": {
            "oneOf": [
                {"type": "string", "pattern": r"^(?:\d+d)?(?:\d+h)?(?:\d+m)?(?:\d+s)?$", "example": "5m"},
                {"type": "number", "minimum": 0, "exclusiveMinimum": True},
            ]
        },
        "description": "The wait before each retry: durations ('5s', '5m', '2h', '1d') or seconds; answers give "
        "seconds.",
    }
)
class RetryScheduleField(serializers.Field):
    """A retry schedule: a list of durations (`"5s"`, `"5m"`, `"2h"` or seconds), the wait before each retry;
    [] for one attempt only; null for the service's default. Returns seconds. Errors name the item
    (`retry_schedule[2]`) through DRF's list errors."""

    MAX_ITEMS = 24

    def __init__(self, **kwargs):
        kwargs.setdefault("allow_null", True)
        super().__init__(**kwargs)

    def to_internal_value(self, data):
        from .durations import DURATION_SAYS, duration_seconds

        if not isinstance(data, list):
            raise serializers.ValidationError(f"Must be a list of durations, not {_json_type(data)}.")
        if len(data) > self.MAX_ITEMS:
            raise serializers.ValidationError(f"At most {self.MAX_ITEMS} retries.")
        seconds, errors = [], {}
        for index, item in enumerate(data):
            value = duration_seconds(item)
            if value is None:
                errors[index] = [f"{DURATION_SAYS}, or a number of seconds."]
            seconds.append(value)
        if errors:
            raise serializers.ValidationError(errors)
        return seconds

    def to_representation(self, value):
        return value


class QuerySerializer(serializers.Serializer):
    """Query-string parameters of a list or report (`?status=failed&workflow=welcome`).

    DRF reads `?workflow=` (a parameter given empty) as if it were absent, which silently widens the
    answer to everything; the OpenAPI description says a value is required. An empty parameter is refused
    instead, naming it.
    """

    def to_internal_value(self, data):
        blank = [name for name in self.fields if hasattr(data, "get") and data.get(name) == ""]
        if blank:
            raise serializers.ValidationError(
                {name: ["Give a value, or leave the parameter out."] for name in blank}, code="blank"
            )
        return super().to_internal_value(data)
