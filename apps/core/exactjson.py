"""JSON whose numbers keep their exact digits.

Row keys and values come from a customer's PostgreSQL, where `numeric(30,20)` holds
1.23456789012345678901: read as a float it would be sent on as 1.2345678901234567, another row.
So the JSON that carries them is decoded with numbers that have a fraction or an exponent as
`decimal.Decimal` (integers stay ints), and encoded back as JSON numbers with the same digits. The
standard library decodes to Decimal (`parse_float`) but cannot encode one as a number; simplejson's
encoder (`use_decimal`) does, so encoding goes through it behind a `json.JSONEncoder` class, the
interface Django's JSONField and DRF's renderer take.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import TYPE_CHECKING

import simplejson
from django.core.serializers.json import DjangoJSONEncoder

# The mixin reads the options of the json.JSONEncoder it is mixed into; the checker is told so.
if TYPE_CHECKING:
    _Encoder = json.JSONEncoder
else:
    _Encoder = object


class ExactNumbers(_Encoder):
    """Mixin for a `json.JSONEncoder` subclass: encode with its options, a Decimal as a JSON number with its
    digits; every other value as the class it is mixed into encodes it (its `default`)."""

    def encode(self, o) -> str:
        return simplejson.dumps(
            o,
            use_decimal=True,
            default=self.default,
            skipkeys=self.skipkeys,
            ensure_ascii=self.ensure_ascii,
            check_circular=self.check_circular,
            allow_nan=self.allow_nan,
            indent=self.indent,
            separators=(self.item_separator, self.key_separator),
            sort_keys=self.sort_keys,
            # As the standard library: a namedtuple is an array.
            namedtuple_as_object=False,
        )

    def iterencode(self, o, _one_shot=False):
        yield self.encode(o)


class ExactEncoder(ExactNumbers, DjangoJSONEncoder):
    """Django's encoder (dates, times, UUIDs...), with a Decimal written as a number, not a string."""


class ExactDecoder(json.JSONDecoder):
    """Numbers with a fraction or an exponent become Decimal, exactly as written."""

    def __init__(self, **kwargs):
        kwargs.setdefault("parse_float", Decimal)
        super().__init__(**kwargs)


def dumps(value, **kwargs) -> str:
    """`json.dumps` with ExactEncoder (the same keyword arguments)."""
    return json.dumps(value, cls=ExactEncoder, **kwargs)


def loads(text: str | bytes):
    """`json.loads` with ExactDecoder."""
    return json.loads(text, cls=ExactDecoder)
