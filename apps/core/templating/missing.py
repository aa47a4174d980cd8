"""A template that names something its context lacks, and where that something was looked for.

Jinja's Undefined knows the name it was made for and the object it was looked up on (none for a
top-level name). `render` turns that object into its path from the context's top level, found by
identity, so that a caller can tell a missing `recipient.email` (the recipient lacks an address) from a
missing `row` or `data.order` (the run lacks what the workflow needs).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from typing import Any

from .limits import TemplateRenderError

# How many values the search for a missing name's owner looks at, at most (it runs only on an error).
_SEARCH_LIMIT = 100_000


class MissingVariable(TemplateRenderError):
    """A template named something that is not there: a top-level variable, a key of a mapping, an
    attribute or an index.

    - `name`: the name (or index) looked up, e.g. "order" for `{{ data.order }}`;
    - `path`: where it was looked up from the context's top level, the name last: ("data", "order"),
      ("rows", 0, "email"), ("row",) for a missing top-level `row`; None when it was looked up on a value
      the template made itself (`{% set x = {} %}{{ x.y }}`) or on none of the context's values;
    - `where`: the path as a template writes it ("data.order", "rows[0].email"), else the name.

    The message is "Missing variable '<name>'." whatever the path.
    """

    def __init__(self, name, *, owner=None, top_level: bool = False):
        super().__init__(f"Missing variable '{name}'.")
        self.name = name
        self.path: tuple | None = (name,) if top_level else None
        self._owner = None if top_level else owner

    def locate(self, context: Mapping) -> None:
        """Find the path of the value the name was looked up on, by identity, among `context`'s values
        (breadth first: the shortest path); sets `path`. Called once, by `render`, with its context."""
        owner, self._owner = self._owner, None
        if self.path is not None or owner is None:
            return
        found = _path_to(owner, context)
        if found is not None:
            self.path = (*found, self.name)

    @property
    def where(self) -> str:
        return path_text(self.path) if self.path else str(self.name)

    def rooted_in(self, variable: str) -> bool:
        """Whether the missing name was looked up on top-level `variable` or on a value inside it:
        `recipient.email` and `recipient.address.city` are rooted in "recipient"; a missing `recipient`
        itself is not (it is not a property the recipient lacks)."""
        return self.path is not None and len(self.path) > 1 and self.path[0] == variable


def path_text(path: tuple) -> str:
    """A path as a template writes it: ("rows", 0, "first name") -> "rows[0]['first name']"."""
    text = ""
    for part in path:
        if isinstance(part, str) and part.isidentifier():
            text += f".{part}" if text else part
        else:
            text += f"[{part!r}]"
    return text


def _path_to(target, context: Mapping) -> tuple | None:
    queue: deque = deque(((key,), value) for key, value in context.items())
    seen: set[int] = set()
    while queue and len(seen) < _SEARCH_LIMIT:
        path, value = queue.popleft()
        if value is target:
            return path
        children: Iterable[tuple[Any, Any]]
        if isinstance(value, Mapping):
            children = value.items()
        elif isinstance(value, (list, tuple)):
            children = enumerate(value)
        else:
            continue
        if id(value) not in seen:
            seen.add(id(value))
            queue.extend(((*path, key), child) for key, child in children)
    return None
