"""The size check before a `replace` call holds for every text a template can hold, a Markup (what `|safe`,
`|escape` and autoescaping give) included: counted before the text is built, as it will be built."""

import pytest
from markupsafe import Markup

from apps.core.templating import TemplateLimitError, limits, render


@pytest.fixture(autouse=True)
def small_limit(settings):
    settings.ROWBELL_TEMPLATE_MAX_CHARS = 10_000


def test_a_markup_replace_with_plain_text_is_counted_before_it_runs():
    # 100 + 100 * 199 characters: refused before they are built, not once they are.
    with pytest.raises(TemplateLimitError):
        limits.check_method_call(Markup("a" * 100).replace, ("a", "b" * 200), {})


def test_a_markup_replace_is_counted_with_the_new_text_escaped_as_it_will_be():
    # "<" * 30 is 30 characters, 120 once escaped: 100 + 100 * 119 characters.
    with pytest.raises(TemplateLimitError):
        limits.check_method_call(Markup("a" * 100).replace, ("a", "<" * 30), {})
    # Any new text is escaped (printed) first: a number too.
    with pytest.raises(TemplateLimitError):
        limits.check_method_call(Markup("a" * 100).replace, ("a", 10**200), {})


def test_replace_within_the_limit_runs_as_it_did():
    assert limits.check_method_call(Markup("a" * 100).replace, ("a", "bb"), {}) == (("a", "bb"), {})
    assert limits.check_method_call(("a" * 100).replace, ("a", Markup("bb")), {}) == (("a", Markup("bb")), {})
    with pytest.raises(TemplateLimitError):
        limits.check_method_call(("a" * 100).replace, ("a", "b" * 200), {})
    assert render("{{ ('<b>a</b>'|safe).replace('a', '<i>') }}", {}, html=True) == "<b>&lt;i&gt;</b>"
    assert render("{{ data.s.replace('a', data.t) }}", {"data": {"s": "xax", "t": "yy"}}) == "xyyx"
