"""The bounds of one render: time, size, number sizes and nesting.

A template is code from a tenant that runs in a worker (or a web process) shared with every other
tenant. Nothing in it may run for long or build anything big, so every way a template can amplify its
input is checked *before* the work is done:

- time: a deadline (ROWBELL_TEMPLATE_RENDER_SECONDS) checked at every loop iteration and every call
  (macros included), so a render stops within a loop iteration of its deadline, in any thread;
- size: no string, list or printed value longer than ROWBELL_TEMPLATE_MAX_CHARS characters (items
  count for lists), counted before `*`, `+`, `%`, `str.format`, `center`, `join`, `replace`, ... build
  it; a list's size is what it would print to, so `[big] * 1000` is as big as `big * 1000`; the text a
  block collects before it is joined (set blocks, macros, call and filter blocks) is counted as it grows
  (BoundedBuffer);
- numbers: no integer above MAX_INT_BITS bits (`9 ** 9 ** 8` is refused, not computed);
- ranges: at most MAX_RANGE items; calls nest at most MAX_CALL_DEPTH deep (a macro calling itself).

A bound that trips raises TemplateLimitError, which says which bound and what to do.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field

from django.conf import settings
from jinja2.utils import Namespace
from markupsafe import Markup

MAX_INT_BITS = 100_000  # ~30,000 digits: far beyond any real amount, and Python prints at most 4,300
MAX_RANGE = 100_000
MAX_CALL_DEPTH = 64
_SEQUENCES = (str, bytes, list, tuple)
_CONTAINERS = (list, tuple, dict, set, frozenset)


class TemplateRenderError(Exception):
    """A template that cannot render with the data given: permanent, retrying will not fix it.

    `source` is the template that failed, when known (to name the field it came from)."""

    source: str | None = None


class TemplateLimitError(TemplateRenderError):
    """A render stopped by one of its bounds (time, size, number size, nesting). The message names the
    bound and says what to change."""


@dataclass
class Budget:
    """What one render (or a group of renders sharing a budget) may still spend.

    `deadline` is a time.monotonic() value; `max_chars` bounds every value built and the output.
    `weights` remembers container sizes already measured (id -> (object, size)); the object is kept so
    that its id cannot be reused while remembered."""

    seconds: float
    deadline: float
    max_chars: int
    depth: int = 0
    weights: dict = field(default_factory=dict)


_BUDGET: ContextVar[Budget | None] = ContextVar("rowbell_template_budget", default=None)


def _new_budget(seconds: float | None = None) -> Budget:
    seconds = settings.ROWBELL_TEMPLATE_RENDER_SECONDS if seconds is None else seconds
    return Budget(seconds=seconds, deadline=time.monotonic() + seconds, max_chars=settings.ROWBELL_TEMPLATE_MAX_CHARS)


@contextmanager
def render_budget(seconds: float | None = None):
    """Share one budget between the renders inside (e.g. every field of one notify step for one
    recipient), so that their time adds up: `seconds` (default ROWBELL_TEMPLATE_RENDER_SECONDS) for all
    of them. Inside an open budget this opens nothing: the outer one applies. Yields the Budget."""
    current = _BUDGET.get()
    if current is not None:
        yield current
        return
    budget = _new_budget(seconds)
    token = _BUDGET.set(budget)
    try:
        yield budget
    finally:
        _BUDGET.reset(token)


def budget() -> Budget:
    """The open budget, or a fresh one (a value checked outside any render is still bounded)."""
    return _BUDGET.get() or _new_budget()


def tick() -> None:
    """Called at every loop iteration and call: stop the render once its time is up."""
    current = _BUDGET.get()
    if current is not None and time.monotonic() > current.deadline:
        raise TemplateLimitError(
            f"The template ran longer than {current.seconds:g} s and was stopped. Make its loops shorter "
            "(fewer or smaller ranges, no macro that calls itself without end) or give it less data."
        )


def check_size(size: int, what: str = "a text or list") -> None:
    """Refuse to build `what` of `size` characters (items for lists) beyond the limit."""
    limit = budget().max_chars
    if size > limit:
        raise TemplateLimitError(
            f"The template would build {what} of {size:,} characters; the limit is {limit:,}. Repeat less "
            "(`*`, `center`, `join`, `replace`, widths in `format`), or use smaller data."
        )


def weight(value) -> int:
    """What `value` would print to, in characters, at least, for the values that can be big: a string's
    length, a container's items' weights (plus one per item). Measuring stops past the limit, so it costs
    at most ~max_chars steps, even for a list that holds the same big list many times."""
    if isinstance(value, (str, bytes)):
        return len(value)
    if isinstance(value, Namespace):  # prints as its attributes
        value = object.__getattribute__(value, "_Namespace__attrs")
    if not isinstance(value, _CONTAINERS):
        return 1
    current = budget()
    known = current.weights.get(id(value))
    if known is not None and known[0] is value:
        return known[1]
    limit, total = current.max_chars, 0
    if len(value) > limit:  # every item weighs at least 1
        return len(value)
    stack = [value]
    while stack and total <= limit:
        item = stack.pop()
        if isinstance(item, (str, bytes)):
            total += len(item) + 1
        elif isinstance(item, Namespace):
            total += 1
            stack.append(object.__getattribute__(item, "_Namespace__attrs"))
        elif isinstance(item, Mapping):
            total += 1
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, _CONTAINERS):
            total += 1
            stack.extend(item)
        else:
            total += 1
    current.weights[id(value)] = (value, total)
    return total


def check_printable(value, what: str = "a printed value"):
    """Return `value` if printing it stays within the size limit; raise TemplateLimitError otherwise.
    Strings count too: a filter given a text past the limit (from the data, or a `{% filter %}` block's
    body) is refused before it copies it."""
    if isinstance(value, (str, bytes, *_CONTAINERS, Namespace)):
        check_size(weight(value), what)
    return value


class BoundedBuffer(list):
    """The list Jinja collects a block's output in before joining it (set blocks, macro and call bodies,
    filter blocks, recursive loops): it counts the characters appended and refuses, as soon as they pass
    the size limit, to grow further. Without it such a block could build text of any size out of pieces
    that each fit (`{% set x %}{% for i in range(n) %}{{ big }}{% endfor %}{% endset %}`)."""

    __slots__ = ("size", "limit")

    def __init__(self):
        super().__init__()
        self.size = 0
        self.limit = budget().max_chars

    def _grow(self, item) -> None:
        self.size += weight(item)
        if self.size > self.limit:
            raise TemplateLimitError(
                f"A block of the template (a `{{% set %}}` block, a macro, a `{{% call %}}` or `{{% filter %}}` "
                f"block) would collect more than {self.limit:,} characters, the limit. Print less inside it "
                "(shorter loops, fewer or smaller values)."
            )

    def append(self, item) -> None:
        """Append one piece of output, counted first."""
        self._grow(item)
        super().append(item)

    def extend(self, items) -> None:
        """Append several pieces of output, each counted first."""
        for item in items:
            self.append(item)

    # mypy compares an __iadd__ only with a plain __add__, not with list's overloaded one.
    def __iadd__(self, items):  # type: ignore[misc]
        self.extend(items)
        return self

    def insert(self, index, item) -> None:
        """Insert one piece of output, counted first."""
        self._grow(item)
        super().insert(index, item)


def bounded_join(pieces) -> str:
    """Join output as Jinja's `concat` does, counting it piece by piece on the way: a block rendered
    through `self.<block>()` arrives as a generator, which is stopped once its text passes the limit."""
    if not isinstance(pieces, BoundedBuffer):  # a BoundedBuffer was counted as it grew
        collected = BoundedBuffer()
        for piece in pieces:
            collected.append(piece)
        pieces = collected
    return "".join(pieces)


def containers_changed() -> None:
    """A list or dict was changed in place (append, update...): sizes measured before no longer hold."""
    current = _BUDGET.get()
    if current is not None:
        current.weights.clear()


def check_int_bits(bits: float) -> None:
    """Refuse to compute an integer of about `bits` bits beyond MAX_INT_BITS."""
    if bits > MAX_INT_BITS:
        raise TemplateLimitError(
            f"The template would compute a number of about {int(bits):,} bits; the limit is {MAX_INT_BITS:,} "
            "bits (about 30,000 digits). Use smaller numbers or exponents."
        )


def check_binop(operator: str, left, right) -> None:
    """Refuse `left <operator> right` if its result would be too big, before computing it."""
    if operator == "*":
        for seq, times in ((left, right), (right, left)):
            if isinstance(seq, _SEQUENCES) and isinstance(times, int):
                check_size((weight(seq) if isinstance(seq, (list, tuple)) else len(seq)) * max(times, 0))
        if isinstance(left, int) and isinstance(right, int):
            check_int_bits(left.bit_length() + right.bit_length())
    elif operator == "**":
        if isinstance(left, int) and isinstance(right, int) and right > 0 and abs(left) > 1:
            check_int_bits(right * math.log2(abs(left)))
    elif operator == "+":
        if isinstance(left, _SEQUENCES) and isinstance(right, _SEQUENCES):
            check_size(weight(left) + weight(right))
    elif operator == "%" and isinstance(left, str):
        check_percent_format(left, right)


# %[(name)][flags][width][.precision][length]type, width and precision possibly `*` (taken from the args).
_PERCENT = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d*)(?:\.(\*|\d*))?[hlL]?([diouxXeEfFgGcrsa%])")


def _printed_length(value) -> int:
    try:
        return max(len(str(value)), len(ascii(value)))
    except ValueError:  # an integer too long to print: formatting it fails the same way
        return 0


def check_percent_format(fmt: str, args) -> None:
    """Refuse `fmt % args` (and the `format` filter) if its result could pass the size limit: every
    conversion counted at its width or precision, or as long as the longest argument prints."""
    if isinstance(args, Mapping):
        values = list(args.values())
    elif isinstance(args, tuple):
        values = list(args)
    else:
        values = [args]
    for value in values:
        check_printable(value, "a formatted value")
    longest = max((_printed_length(v) for v in values), default=0)
    star = max((abs(v) for v in values if isinstance(v, int)), default=0)
    total = len(fmt)
    for match in _PERCENT.finditer(fmt):
        if match.group(3) == "%":
            continue
        width = star if match.group(1) == "*" else int(match.group(1) or 0)
        precision = star if match.group(2) == "*" else int(match.group(2) or 0)
        total += max(width, precision) + longest
        if total > budget().max_chars:
            break
    check_size(total, "a formatted text")


# A str.format field's spec: [[fill]align][sign][z][#][0][width][grouping][.precision][type]
_FORMAT_SPEC = re.compile(r"(?:.?[<>=^])?[-+ ]?z?#?0?(\d*)[,_]?(?:\.(\d+))?")


def check_format_spec(spec: str) -> None:
    """Refuse a str.format field whose width or precision passes the size limit."""
    match = _FORMAT_SPEC.match(spec)
    if match:
        check_size(max(int(match.group(1) or 0), int(match.group(2) or 0)), "a formatted field")


def bounded_range(*args) -> range:
    """range() for templates: at most MAX_RANGE items."""
    items = range(*args)
    if len(items) > MAX_RANGE:
        raise TemplateLimitError(f"range() of {len(items):,} items; the limit is {MAX_RANGE:,}. Loop over less.")
    return items


def _occurrences(owner: str | bytes, old, new) -> int | None:
    """How often `old` occurs in `owner`, when `owner.replace(old, new)` takes them: both text for a str
    (a Markup or any other subclass), both bytes for bytes. None otherwise: that call fails by itself."""
    if isinstance(owner, str):
        return owner.count(old) if isinstance(old, str) and isinstance(new, str) else None
    if isinstance(old, (bytes, bytearray)) and isinstance(new, (bytes, bytearray)):
        return owner.count(old)
    return None


def check_method_call(obj, args: tuple, kwargs: dict) -> tuple:
    """Check a call of a method of a str, bytes, int, list or dict before it runs; return the arguments
    to call it with (a `join`'s items, read once)."""
    owner = getattr(obj, "__self__", None)
    name = getattr(obj, "__name__", "")
    if isinstance(owner, (str, bytes)):
        if name in ("center", "ljust", "rjust", "zfill") and args and isinstance(args[0], int):
            check_size(args[0])
        elif name == "expandtabs":
            size = args[0] if args else kwargs.get("tabsize", 8)
            if isinstance(size, int):
                tabs = owner.count("\t") if isinstance(owner, str) else owner.count(b"\t")
                check_size(len(owner) + tabs * max(size, 0))
        elif name == "replace" and len(args) >= 2:
            old, new = args[0], args[1]
            if isinstance(owner, Markup):  # its replace escapes `new`, whatever it is, then replaces
                new = owner.escape(new)
            count = _occurrences(owner, old, new)
            if count is not None:
                limit = args[2] if len(args) > 2 else kwargs.get("count", -1)
                if isinstance(limit, int) and limit >= 0:
                    count = min(count, limit)
                check_size(len(owner) + count * max(len(new) - len(old), 0))
        elif name == "join" and args:
            items = list(args[0])
            check_size(
                sum(len(i) if isinstance(i, (str, bytes)) else 0 for i in items) + len(owner) * max(len(items) - 1, 0)
            )
            return (items, *args[1:]), kwargs
        elif name == "translate" and args and isinstance(args[0], Mapping):
            longest = max((len(v) for v in args[0].values() if isinstance(v, str)), default=1)
            check_size(len(owner) * max(longest, 1))
    elif isinstance(owner, int) and name == "to_bytes":
        length = args[0] if args else kwargs.get("length", 1)
        if isinstance(length, int):
            check_size(length, "a byte string")
    elif isinstance(owner, (list, dict, set)) and name in ("append", "extend", "insert", "update", "add", "setdefault"):
        grown = weight(owner) + sum(weight(a) for a in args) + sum(weight(v) for v in kwargs.values())
        check_size(grown)
        containers_changed()
        # What it will weigh, known without measuring again (`l.extend(l)` in a loop doubles it each time).
        budget().weights[id(owner)] = (owner, grown)
    return args, kwargs
