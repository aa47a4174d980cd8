"""Extension points: how a lower layer calls into a higher one without importing it.

Data flows capture -> runs -> deliveries, and imports point the other way (README, "Layout"). Where a
lower app must hand work up (pick-up hands recorded events to their consumers; a settled delivery moves its
run on), it calls a `Registry` it owns, and the higher app adds its function in `AppConfig.ready()`.
The call is a plain function call inside the caller's transaction, so what the consumers write commits or
rolls back with the caller's own rows; an exception propagates to the caller like any other.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any


class Registry:
    """An ordered set of functions filled at start-up.

    `name` says what it is for (it appears in errors); functions are called in the order they were added,
    each with the caller's keyword arguments. Adding the same function twice keeps one (ready() may run
    twice in tests).
    """

    def __init__(self, name: str):
        self.name = name
        self._functions: list[Callable[..., Any]] = []

    def register(self, function: Callable[..., Any]) -> Callable[..., Any]:
        """Add `function` (usable as a decorator); returns it unchanged."""
        if function not in self._functions:
            self._functions.append(function)
        return function

    def __iter__(self) -> Iterator[Callable[..., Any]]:
        return iter(tuple(self._functions))

    def __len__(self) -> int:
        return len(self._functions)

    def call_each(self, **kwargs) -> list[Any]:
        """Call every function with `kwargs`; return their results in order."""
        return [function(**kwargs) for function in self]

    def __repr__(self) -> str:
        return f"<Registry {self.name}: {[getattr(f, '__qualname__', f) for f in self._functions]}>"
