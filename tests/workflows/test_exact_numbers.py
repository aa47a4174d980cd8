"""Numbers read from a customer's database keep their digits (Decimal): templates and conditions take
them as they took floats."""

from decimal import Decimal

import pytest

from apps.core.templating import TemplateRenderError, render
from apps.workflows.conditions import data_condition_holds

ROW = {"row": {"id": Decimal("1.23456789012345678901"), "total": Decimal("12.50"), "n": 3}}


@pytest.mark.parametrize(
    "source, text",
    [
        ("{{ row.id }}", "1.23456789012345678901"),
        ("{{ row.total }}", "12.50"),
        ("{{ '%.1f' | format(row.total) }}", "12.5"),
        ("{{ row.total * 2 }} {{ row.total + row.n }}", "25.00 15.50"),
        ("{{ row.total * 1.5 }} {{ 0.5 + row.total }} {{ row.total / 0.5 }}", "18.75 13.0 25.0"),
        ("{{ row.total | round(1) }} {{ row.total | float }} {{ row.total > 12.4 }}", "12.5 12.5 True"),
        ("{{ row | tojson }}", '{"id": 1.23456789012345678901, "n": 3, "total": 12.50}'),
    ],
)
def test_templates_print_every_digit_and_compute_with_floats(source, text):
    assert render(source, ROW) == text


def test_a_template_error_with_such_numbers_is_still_a_template_error():
    with pytest.raises(TemplateRenderError):
        render("{{ row.total + 'x' }}", ROW)


@pytest.mark.parametrize(
    "condition, holds",
    [
        ({"column": "row.total", "op": "eq", "value": 12.5}, True),
        ({"column": "row.total", "op": "eq", "value": 12}, False),
        ({"column": "row.total", "op": "gt", "value": 12.49}, True),
        ({"column": "row.total", "op": "in", "value": [1, 12.5]}, True),
        ({"column": "row.total", "op": "eq", "value": "12.50"}, False),  # another kind: never equal
        ({"column": "row.total", "op": "ne", "value": "12.50"}, True),
        ({"column": "row.n", "op": "lt", "value": Decimal("3.5")}, True),
    ],
)
def test_conditions_compare_such_numbers_with_the_definition_s_numbers(condition, holds):
    assert data_condition_holds(condition, ROW) is holds
