"""User templates, rendered by a bounded Jinja2 sandbox.

The sandbox blocks attribute access to Python internals (`__class__`, `__globals__`, ...) and the
environment has no loader, so templates cannot include files. A missing variable is an error that
names it (MissingVariable, with where it was looked for), never a silent blank. `x.name` on a mapping is
its key `name` when it has one (`batch.items`, a column named `keys`), else the attribute as usual. HTML
templates autoescape.

Every render is bounded in time and size (see `limits`): a bound that trips raises TemplateLimitError
(a TemplateRenderError), which saving, publishing and previewing answer with a 400 naming the field,
and which fails the step at run time. Saving also refuses what can be seen to trip a bound without any
data (`{{ 9 ** 9 ** 8 }}`, `range(10 ** 7)`), without computing it.

Numbers read from a customer's database may be Decimal (apps.core.exactjson): they print with their
digits, `tojson` writes them as numbers, and arithmetic with a float computes in floats, as Python
would refuse to.
"""

from __future__ import annotations

from functools import lru_cache

from jinja2 import TemplateError, TemplateSyntaxError, nodes
from jinja2.sandbox import SecurityError

from .environment import environment
from .limits import TemplateLimitError, TemplateRenderError, bounded_range, render_budget
from .missing import MissingVariable

__all__ = [
    "MissingVariable",
    "TemplateLimitError",
    "TemplateRenderError",
    "render",
    "render_budget",
    "template_check",
]

_TEXT = environment(autoescape=False)
_HTML = environment(autoescape=True)


@lru_cache(maxsize=2048)
def _compiled(source: str, html: bool):
    return (_HTML if html else _TEXT).from_string(source)


def template_check(source: str, *, html: bool = False) -> str | None:
    """Return a message describing why `source` cannot be saved, or None if it can: a syntax error, or a
    bound that its constant parts trip whatever the data (checked without computing anything big)."""
    try:
        with render_budget():
            _compiled(source, html)
            return _constant_limits((_HTML if html else _TEXT).parse(source), html)
    except TemplateSyntaxError as exc:
        return f"Template syntax error on line {exc.lineno}: {exc.message}"
    except RecursionError:
        return "The template nests too deeply (brackets or blocks inside each other); flatten it."
    except TemplateLimitError as exc:
        return str(exc)


class _NotConstant(Exception):
    pass


def _constant_limits(tree: nodes.Template, html: bool) -> str | None:
    """Evaluate the template's constant expressions (numbers, strings, lists and the operators, filters
    and range() over them) with the bounds on: the message of the first bound that trips, else None.
    Other errors are left to run time (a branch the data never takes may hold them)."""
    env = _HTML if html else _TEXT
    eval_ctx = nodes.EvalContext(env)
    known: dict[int, object] = {}
    unknown = object()

    def constant(node):
        value = known.get(id(node))
        if value is unknown:
            raise _NotConstant
        if value is None and id(node) not in known:
            try:
                value = evaluate(node)
            except TemplateLimitError:
                raise
            except Exception:
                known[id(node)] = unknown
                raise _NotConstant from None
            known[id(node)] = value
        return value

    def evaluate(node):
        if isinstance(node, nodes.Const):
            return node.value
        if isinstance(node, (nodes.List, nodes.Tuple)):
            items = [constant(item) for item in node.items]
            return items if isinstance(node, nodes.List) else tuple(items)
        if isinstance(node, nodes.BinExpr):
            return env.call_binop(None, node.operator, constant(node.left), constant(node.right))
        if isinstance(node, nodes.Neg):
            return -constant(node.node)
        arguments_constant = (
            isinstance(node, (nodes.Filter, nodes.Call)) and node.dyn_args is None and node.dyn_kwargs is None
        )
        if arguments_constant and isinstance(node, nodes.Filter) and node.node is not None:
            function = env.filters.get(node.name)
            passed = getattr(function, "jinja_pass_arg", None)
            if function is None or passed is not None and passed.name == "context":
                raise _NotConstant
            head = [] if passed is None else [eval_ctx if passed.name == "eval_context" else env]
            return function(
                *head,
                constant(node.node),
                *(constant(a) for a in node.args),
                **{k.key: constant(k.value) for k in node.kwargs},
            )
        if (
            arguments_constant
            and isinstance(node, nodes.Call)
            and isinstance(node.node, nodes.Name)
            and node.node.name == "range"
            and not node.kwargs
        ):
            return bounded_range(*(constant(a) for a in node.args))
        raise _NotConstant

    for node in tree.find_all(nodes.Expr):
        try:
            constant(node)
        except _NotConstant:
            pass
        except TemplateLimitError as exc:
            return str(exc)
    return None


def render(source: str, context: dict, *, html: bool = False) -> str:
    """Render `source` with `context` within the bounds of one render (or of the render_budget open
    around it). Raises TemplateRenderError with `source` set: MissingVariable when the template names
    something `context` lacks (its `path` says where, e.g. ("data", "order")), TemplateLimitError when a
    bound tripped."""
    try:
        return _render(source, context, html)
    except TemplateRenderError as exc:
        exc.source = source
        if isinstance(exc, MissingVariable):
            exc.locate(context)
        raise


def _render(source: str, context: dict, html: bool) -> str:
    try:
        with render_budget() as budget:
            # Generated piece by piece, so that the whole text is never built past the limit.
            pieces, size = [], 0
            for piece in _compiled(source, html).generate(context):
                size += len(piece)
                if size > budget.max_chars:
                    raise TemplateLimitError(
                        f"The rendered text would be longer than {budget.max_chars:,} characters. Print less "
                        "(shorter loops, fewer or smaller values)."
                    )
                pieces.append(piece)
        text = "".join(pieces)
        if "\x00" in text:
            raise TemplateRenderError("The rendered text contains a NUL character (\\u0000), which cannot be sent.")
        return text
    except TemplateRenderError:
        raise
    except RecursionError as exc:
        raise TemplateLimitError("The template nests too deeply (calls inside calls); flatten it.") from exc
    except MemoryError as exc:
        raise TemplateLimitError("The template needed more memory than a render may use; build less.") from exc
    except SecurityError as exc:
        raise TemplateRenderError(f"Template refused by the sandbox: {exc}") from exc
    except TemplateSyntaxError as exc:
        raise TemplateRenderError(f"Template syntax error on line {exc.lineno}: {exc.message}") from exc
    except TemplateError as exc:
        raise TemplateRenderError(f"Template error: {exc}") from exc
    except (TypeError, ValueError, ArithmeticError, LookupError) as exc:
        raise TemplateRenderError(f"Template error: {exc}") from exc
