"""The Jinja2 sandbox that renders user templates, with the bounds of `limits` built in.

Where each bound is enforced:

- every list Jinja collects a block's output in (`{% set %}` blocks, macro and call bodies, filter
  blocks, recursive loops) is a `limits.BoundedBuffer`, made by the code generator, that refuses to
  grow past the size limit; every join of output (`environment.concat`) counts as it reads;
- every `{% for %}` iteration (recursive loops included) starts with `environment.loop_tick()`, put
  there by the code generator; every call (functions, methods, macros) goes through `call`;
- `*`, `**`, `+` and `%` go through `call_binop`; `~` and `{{ }}` print only values that fit;
- every filter is wrapped: it checks the clock, and the ones that amplify (center, indent, wordwrap,
  replace, join, format, batch, slice, sum) check the size of what they would build first;
- no constant folding at compile time (`optimized=False`), so saving a template never computes it; the
  folding Jinja still does for printed constants calls the wrapped filters, which refuse big results.
"""

from __future__ import annotations

import types
from collections.abc import Mapping
from decimal import Decimal
from functools import update_wrapper, wraps

from jinja2 import StrictUndefined, nodes
from jinja2.compiler import CodeGenerator
from jinja2.filters import make_attrgetter
from jinja2.sandbox import SandboxedEnvironment, SandboxedEscapeFormatter, SandboxedFormatter, SecurityError
from jinja2.utils import generate_lorem_ipsum, missing
from markupsafe import Markup

from apps.core import exactjson

from . import limits
from .limits import TemplateLimitError, TemplateRenderError
from .missing import MissingVariable


def _printable(value):
    """What `{{ value }}` prints: within the size limit (limits.check_printable), and a list or an object as
    JSON with every digit (`[1.23456789012345678901]`, `{"total": 10.00}`), not as Python writes it
    (`[Decimal('1.23456789012345678901')]`, `{'total': Decimal('10.00')}`)."""
    value = limits.check_printable(value)
    if isinstance(value, (list, tuple, dict)):
        try:
            return exactjson.dumps(value, ensure_ascii=False, default=str)
        except (TypeError, ValueError):  # a value JSON cannot hold (a circular list): as Python writes it
            return value
    return value


class _Undefined(StrictUndefined):
    __slots__ = ()

    def _fail_with_undefined_error(self, *args, **kwargs):
        if self._undefined_exception is SecurityError:  # made by the sandbox for what it refuses: not a missing name
            raise TemplateRenderError(f"Template refused by the sandbox: {self._undefined_hint}")
        raise MissingVariable(self._undefined_name, owner=self._undefined_obj, top_level=self._undefined_obj is missing)

    # StrictUndefined binds these to the base method directly, so they are re-bound to ours.
    __str__ = __iter__ = __len__ = __eq__ = __ne__ = __bool__ = __hash__ = _fail_with_undefined_error


def _is_tick(node) -> bool:
    return (
        isinstance(node, nodes.ExprStmt)
        and isinstance(node.node, nodes.Call)
        and isinstance(node.node.node, nodes.EnvironmentAttribute)
        and node.node.node.name == "loop_tick"
    )


class _CodeGenerator(CodeGenerator):
    def buffer(self, frame):
        # Every list Jinja collects output in (set blocks, macro and call bodies, filter blocks, recursive
        # loops: all of them are made here) counts its text as it grows, instead of being joined unchecked.
        frame.buffer = self.temporary_identifier()
        self.writeline(f"{frame.buffer} = environment.bounded_buffer()")

    def visit_For(self, node, frame):
        # Every iteration first calls environment.loop_tick() (Jinja allows no node types of our own).
        if not (node.body and _is_tick(node.body[0])):
            tick = nodes.Call(nodes.EnvironmentAttribute("loop_tick"), [], [], None, None, lineno=node.lineno)
            node.body.insert(0, nodes.ExprStmt(tick, lineno=node.lineno))
        super().visit_For(node, frame)

    def visit_Concat(self, node, frame):
        # As Jinja's, with the operands' printed size checked before `~` joins them: `s ~ s` in a loop
        # doubles, and str() of a list holding the same big string many times is far bigger than the list.
        if frame.eval_ctx.volatile:
            func_name = "(markup_join if context.eval_ctx.volatile else str_join)"
        elif frame.eval_ctx.autoescape:
            func_name = "markup_join"
        else:
            func_name = "str_join"
        self.write(f"{func_name}(environment.concat_parts((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write(")))")


class _SizedFields:
    """str.format that refuses wide fields, and stops once the text it builds passes the size limit."""

    _built = 0

    def format_field(self, value, format_spec):
        limits.check_format_spec(format_spec)
        limits.check_printable(value, "a formatted value")
        text = super().format_field(value, format_spec)
        self._built += len(text)
        limits.check_size(self._built, "a formatted text")
        return text


class _Formatter(_SizedFields, SandboxedFormatter):
    pass


class _EscapeFormatter(_SizedFields, SandboxedEscapeFormatter):
    pass


def _value_index(filter_function) -> int:
    """Where a filter's value is among its arguments: after the context Jinja passes, if it passes one."""
    return 1 if getattr(filter_function, "jinja_pass_arg", None) is not None else 0


def _guarded(name: str, original):
    """Wrap filter `original`: check the clock, check what it would build (for the ones that amplify)
    and what it built. The wrapper takes the same arguments (wraps copies Jinja's pass_* marker)."""
    at = _value_index(original)

    @wraps(original)
    def guarded(*args, **kwargs):
        limits.tick()
        args = list(args)
        value = args[at] if len(args) > at else None
        if name not in _NOT_PRINTING:
            limits.check_printable(value)
        precheck = _PRECHECKS.get(name)
        if precheck is not None:
            replaced = precheck(args[:at], value, args[at + 1 :], kwargs)
            if replaced is not None:
                args, kwargs = replaced
        result = original(*args, **kwargs)
        if isinstance(result, (str, bytes, list, tuple)):
            limits.check_size(len(result))
        return result

    return guarded


def _arg(rest, kwargs, index, name, default):
    return rest[index] if len(rest) > index else kwargs.get(name, default)


def _center(head, value, rest, kwargs):
    width = _arg(rest, kwargs, 0, "width", 80)
    if isinstance(width, int):
        limits.check_size(width)


def _indent(head, value, rest, kwargs):
    width = _arg(rest, kwargs, 0, "width", 4)
    text = str(limits.check_printable(value))
    step = width if isinstance(width, int) else len(str(width))
    limits.check_size(len(text) + (text.count("\n") + 1) * max(step, 0))


def _wordwrap(head, value, rest, kwargs):
    width = _arg(rest, kwargs, 0, "width", 79)
    wrapstring = _arg(rest, kwargs, 2, "wrapstring", None) or "\n"
    text = str(limits.check_printable(value))
    lines = text.count("\n") + len(text.split()) + len(text) // max(width if isinstance(width, int) else 1, 1) + 1
    limits.check_size(len(text) + lines * len(str(wrapstring)))


def _replace(head, value, rest, kwargs):
    text = str(limits.check_printable(value))
    old, new = str(_arg(rest, kwargs, 0, "old", "")), str(_arg(rest, kwargs, 1, "new", ""))
    count = text.count(old)
    limit = _arg(rest, kwargs, 2, "count", None)
    if isinstance(limit, int) and limit >= 0:
        count = min(count, limit)
    limits.check_size(len(text) + count * max(len(new) - len(old), 0))


def _join(head, value, rest, kwargs):
    separator = str(_arg(rest, kwargs, 0, "d", ""))
    attribute = _arg(rest, kwargs, 1, "attribute", None)
    items = list(value)
    if attribute is not None:
        items = list(map(make_attrgetter(head[0].environment, attribute), items))
    limits.check_size(sum(limits.weight(i) for i in items) + len(separator) * max(len(items) - 1, 0))
    return [*head, items, separator], {}


def _format(head, value, rest, kwargs):
    limits.check_percent_format(str(limits.check_printable(value)), kwargs or tuple(rest))


def _count(name, index, default):
    def check(head, value, rest, kwargs):
        count = _arg(rest, kwargs, index, name, default)
        if isinstance(count, int):
            limits.check_size(count, "a list")

    return check


def _sum(head, value, rest, kwargs):
    # Adds one item at a time, each addition bounded like `+` (summing lists copies them every time).
    environment = head[0] if head else None
    attribute = _arg(rest, kwargs, 0, "attribute", None)
    total = _arg(rest, kwargs, 1, "start", 0)
    items = value if attribute is None else map(make_attrgetter(environment, attribute), value)
    for item in items:
        limits.tick()
        limits.check_binop("+", total, item)
        total = total + item
    return [*head, [], None, total], {}


_PRECHECKS = {
    "center": _center,
    "indent": _indent,
    "wordwrap": _wordwrap,
    "replace": _replace,
    "join": _join,
    "format": _format,
    "batch": _count("linecount", 0, 1),
    "slice": _count("slices", 0, 1),
    "sum": _sum,
}
# Filters that do not turn their value into text. The others do (`string`, `tojson`, `upper`, `center`...):
# their value must print within the size limit (a list holding one big string many times would not).
_NOT_PRINTING = frozenset(
    {
        "length",
        "count",
        "first",
        "last",
        "batch",
        "slice",
        "sum",
        "join",
        "map",
        "select",
        "reject",
        "selectattr",
        "rejectattr",
        "list",
        "sort",
        "unique",
        "groupby",
        "dictsort",
        "items",
        "attr",
        "default",
        "d",
        "random",
        "max",
        "min",
        "reverse",
        "abs",
        "round",
        "int",
        "float",
        "filesizeformat",
    }
)


def _lipsum(n: int = 5, html: bool = True, min: int = 20, max: int = 100):  # noqa: A002 (Jinja's names)
    """lipsum() with at most 100 paragraphs of at most 1,000 words."""
    if not (isinstance(n, int) and isinstance(max, int) and n <= 100 and max <= 1000):
        raise TemplateLimitError("lipsum() takes at most 100 paragraphs of at most 1,000 words.")
    return generate_lorem_ipsum(n=n, html=html, min=min, max=max)


class TemplateEnvironment(SandboxedEnvironment):
    """The sandbox with Rowbell's bounds (see the module)."""

    code_generator_class = _CodeGenerator
    intercepted_binops = frozenset({"+", "-", "*", "/", "//", "%", "**"})
    # The compiled code's `concat` and BlockReference's (`self.<block>()`) join: bounded as it reads.
    concat = staticmethod(limits.bounded_join)

    @staticmethod
    def bounded_buffer() -> limits.BoundedBuffer:
        """A new list for the compiled code to collect a block's output in, refused past the size limit."""
        return limits.BoundedBuffer()

    def __init__(self, **kwargs):
        super().__init__(optimized=False, finalize=_printable, **kwargs)
        self.globals["range"] = limits.bounded_range
        self.globals["lipsum"] = _lipsum
        self.filters = {name: _guarded(name, f) for name, f in self.filters.items()}

    @staticmethod
    def loop_tick() -> None:
        """Called by the generated code at every loop iteration; raises TemplateLimitError past the deadline."""
        limits.tick()

    @staticmethod
    def concat_parts(parts: tuple) -> tuple:
        """`~`'s operands, returned as they are if their printed sizes add up within the limit."""
        limits.check_size(sum(limits.weight(p) for p in parts))
        return parts

    def getattr(self, obj, attribute):
        # `x.name` on a mapping is its key when it has one (`batch.items` is the batch's items, not dict.items;
        # a column named `keys` is the column), else the attribute as usual. No new access: `x['name']`
        # (getitem) already reads the key before any attribute.
        if isinstance(obj, Mapping):
            try:
                return obj[attribute]
            except (TypeError, LookupError):
                pass
        return super().getattr(obj, attribute)

    def call_binop(self, context, operator, left, right):
        # Decimal and float do not mix in Python (TypeError); before numbers kept their digits, both were floats.
        if isinstance(left, Decimal) and isinstance(right, float):
            left = float(left)
        elif isinstance(right, Decimal) and isinstance(left, float):
            right = float(right)
        limits.check_binop(operator, left, right)
        return super().call_binop(context, operator, left, right)

    def call(__self, __context, __obj, *args, **kwargs):  # noqa: N805 (Jinja's signature)
        limits.tick()
        args, kwargs = limits.check_method_call(__obj, args, kwargs)
        current = limits.budget()
        if current.depth >= limits.MAX_CALL_DEPTH:
            raise TemplateLimitError(
                f"Calls nest more than {limits.MAX_CALL_DEPTH} deep: a macro (or a recursive loop) that calls "
                "itself without end? Give it a condition that stops it."
            )
        current.depth += 1
        try:
            result = super().call(__context, __obj, *args, **kwargs)
        finally:
            current.depth -= 1
        if isinstance(result, (str, bytes, list, tuple)):
            limits.check_size(len(result))
        owner = getattr(__obj, "__self__", None)
        if isinstance(owner, (list, dict, set)):
            limits.check_printable(owner)
        return result

    def wrap_str_format(self, value):
        # As Jinja's, with formatters that bound the fields' widths and the text built.
        if not isinstance(value, (types.MethodType, types.BuiltinMethodType)) or value.__name__ not in (
            "format",
            "format_map",
        ):
            return None
        owner = value.__self__
        if not isinstance(owner, str):
            return None
        str_type = type(owner)
        is_format_map = value.__name__ == "format_map"

        def wrapper(*args, **kwargs):
            formatter = _EscapeFormatter(self, escape=owner.escape) if isinstance(owner, Markup) else _Formatter(self)
            if is_format_map:
                if kwargs:
                    raise TypeError("format_map() takes no keyword arguments")
                if len(args) != 1:
                    raise TypeError(f"format_map() takes exactly one argument ({len(args)} given)")
                kwargs, args = args[0], ()
            return str_type(formatter.vformat(owner, args, kwargs))

        return update_wrapper(wrapper, value)


def environment(autoescape: bool) -> TemplateEnvironment:
    """A bounded sandbox; HTML templates autoescape. No loader: templates cannot include files."""
    env = TemplateEnvironment(
        undefined=_Undefined, autoescape=autoescape, loader=None, auto_reload=False, keep_trailing_newline=True
    )
    env.policies["json.dumps_function"] = exactjson.dumps
    return env
