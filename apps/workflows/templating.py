"""User templates, rendered by Jinja2's sandbox.

The sandbox blocks attribute access to Python internals (`__class__`, `__globals__`, ...) and the
environment has no loader, so templates cannot include files. A missing variable is an error that
names it (StrictUndefined), never a silent blank. HTML templates autoescape.

Numbers read from a customer's database may be Decimal (apps.core.exactjson): they print with their
digits, `tojson` writes them as numbers, and arithmetic with a float computes in floats, as Python
would refuse to.
"""

from __future__ import annotations

from decimal import Decimal
from functools import lru_cache

from jinja2 import StrictUndefined, TemplateError, TemplateSyntaxError
from jinja2.sandbox import SandboxedEnvironment, SecurityError

from apps.core import exactjson


class TemplateRenderError(Exception):
    """A template that cannot render with the data given: permanent, retrying will not fix it."""


class _Undefined(StrictUndefined):
    __slots__ = ()

    def _fail_with_undefined_error(self, *args, **kwargs):
        raise TemplateRenderError(f"Missing variable '{self._undefined_name}'.")

    # StrictUndefined binds these to the base method directly, so they are re-bound to ours.
    __str__ = __iter__ = __len__ = __eq__ = __ne__ = __bool__ = __hash__ = _fail_with_undefined_error  # type: ignore


class _Environment(SandboxedEnvironment):
    intercepted_binops = frozenset({"+", "-", "*", "/", "//", "%", "**"})

    def call_binop(self, context, operator, left, right):
        # Decimal and float do not mix in Python (TypeError); before numbers kept their digits, both were floats.
        if isinstance(left, Decimal) and isinstance(right, float):
            left = float(left)
        elif isinstance(right, Decimal) and isinstance(left, float):
            right = float(right)
        return super().call_binop(context, operator, left, right)


def _environment(autoescape: bool) -> SandboxedEnvironment:
    environment = _Environment(undefined=_Undefined, autoescape=autoescape, loader=None, auto_reload=False,
                               keep_trailing_newline=True)
    environment.policies["json.dumps_function"] = exactjson.dumps
    return environment


_TEXT = _environment(autoescape=False)
_HTML = _environment(autoescape=True)


@lru_cache(maxsize=2048)
def _compiled(source: str, html: bool):
    return (_HTML if html else _TEXT).from_string(source)


def template_check(source: str, *, html: bool = False) -> str | None:
    """Return a message describing the syntax error in `source`, or None if it compiles."""
    try:
        _compiled(source, html)
    except TemplateSyntaxError as exc:
        return f"Template syntax error on line {exc.lineno}: {exc.message}"
    return None


def render(source: str, context: dict, *, html: bool = False) -> str:
    try:
        text = _compiled(source, html).render(context)
        if "\x00" in text:
            raise TemplateRenderError("The rendered text contains a NUL character (\\u0000), which cannot be sent.")
        return text
    except TemplateRenderError:
        raise
    except SecurityError as exc:
        raise TemplateRenderError(f"Template refused by the sandbox: {exc}") from exc
    except TemplateSyntaxError as exc:
        raise TemplateRenderError(f"Template syntax error on line {exc.lineno}: {exc.message}") from exc
    except TemplateError as exc:
        raise TemplateRenderError(f"Template error: {exc}") from exc
    except (TypeError, ValueError, ArithmeticError, LookupError) as exc:
        raise TemplateRenderError(f"Template error: {exc}") from exc
