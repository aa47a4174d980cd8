"""User templates, rendered by Jinja2's sandbox.

The sandbox blocks attribute access to Python internals (`__class__`, `__globals__`, ...) and the
environment has no loader, so templates cannot include files. A missing variable is an error that
names it (StrictUndefined), never a silent blank. HTML templates autoescape.
"""

from __future__ import annotations

from functools import lru_cache

from jinja2 import StrictUndefined, TemplateError, TemplateSyntaxError
from jinja2.sandbox import SandboxedEnvironment, SecurityError


class TemplateRenderError(Exception):
    """A template that cannot render with the data given: permanent, retrying will not fix it."""


class _Undefined(StrictUndefined):
    __slots__ = ()

    def _fail_with_undefined_error(self, *args, **kwargs):
        raise TemplateRenderError(f"Missing variable '{self._undefined_name}'.")

    # StrictUndefined binds these to the base method directly, so they are re-bound to ours.
    __str__ = __iter__ = __len__ = __eq__ = __ne__ = __bool__ = __hash__ = _fail_with_undefined_error  # type: ignore


def _environment(autoescape: bool) -> SandboxedEnvironment:
    return SandboxedEnvironment(undefined=_Undefined, autoescape=autoescape, loader=None, auto_reload=False,
                                keep_trailing_newline=True)


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
