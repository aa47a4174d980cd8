import json
from collections import namedtuple
from datetime import UTC, datetime
from decimal import Decimal
from uuid import UUID

import pytest
from django.core.serializers.json import DjangoJSONEncoder

from apps.core.exactjson import dumps, loads


def test_numbers_keep_their_type_and_every_digit_through_a_round_trip():
    text = '{"ids":[1.23456789012345678901,12.50,1E+5,-0.0,7,123456789012345678901234567890],"s":"1.5"}'
    value = loads(text)
    assert value == {
        "ids": [
            Decimal("1.23456789012345678901"),
            Decimal("12.50"),
            Decimal("1E+5"),
            Decimal("-0.0"),
            7,
            123456789012345678901234567890,
        ],
        "s": "1.5",
    }
    assert type(value["ids"][4]) is int
    assert dumps(value, separators=(",", ":")) == text
    assert json.loads(dumps(value))["ids"][0] == 1.2345678901234567  # a number, not a string


def test_everything_else_is_encoded_as_the_standard_library_and_django_encode_it():
    Point = namedtuple("Point", "x y")
    value = {
        "at": datetime(2024, 5, 1, 12, tzinfo=UTC),
        "id": UUID(int=1),
        "p": Point(1, 2),
        "n": None,
        "f": 0.1,
        "t": ("é", True),
    }
    for kwargs in ({}, {"separators": (",", ":"), "ensure_ascii": False}, {"indent": 2, "sort_keys": True}):
        assert dumps(value, **kwargs) == json.dumps(value, cls=DjangoJSONEncoder, **kwargs)
    assert dumps({3: 1, None: 2, True: 3}) == json.dumps({3: 1, None: 2, True: 3})
    with pytest.raises(TypeError):
        dumps({"x": object()})
    with pytest.raises(ValueError):
        dumps(float("nan"), allow_nan=False)


@pytest.mark.parametrize(
    ("template", "printed"),
    [
        ("{{ ids }}", "[1.23456789012345678901, 9007199254740993]"),
        ("{{ row }}", '{"total": 10.00, "tags": ["a", "b"], "note": "Ünï"}'),
        ("{{ row.total }}", "10.00"),
        ("{{ row.tags | join(', ') }}", "a, b"),
    ],
)
def test_a_list_or_object_prints_as_json_with_every_digit_not_as_python_writes_it(template, printed):
    from apps.core.templating import render

    context = {
        "ids": [Decimal("1.23456789012345678901"), 9007199254740993],
        "row": {"total": Decimal("10.00"), "tags": ["a", "b"], "note": "Ünï"},
    }
    assert render(template, context) == printed
