"""What connections hands up to the apps built on it, through registries they fill in `ready()`.

- `event_consumers`: each is called as `consumer(events=[Event, ...])` inside the pick-up transaction that
  records the events and advances the cursor, so what it writes (runs, row-event deliveries) commits with
  them or not at all. Returns how many things it started (for logs).
- `capture_users`: each is called as `user(connection=Connection)` and returns the `CaptureUse`s of what is
  live on the connection (published workflows, enabled row-event subscriptions). The captures a connection
  needs, and who needs each, are read from these.
"""

from __future__ import annotations

from dataclasses import dataclass

from apps.core.registry import Registry

event_consumers = Registry("connections.event_consumers")
capture_users = Registry("connections.capture_users")


@dataclass(frozen=True)
class CaptureUse:
    """One live use of a capture: `kind` is "workflows" or "endpoints", `label` the workflow key or endpoint
    id, `capture` the capture's name and `spec` its full definition (`Capture.to_spec()`), or None when only
    the name is known, and `related` the other tables it reads by key. A registry function returns its uses
    oldest first."""

    kind: str
    label: str
    capture: str
    spec: dict | None
    # Tables the user also reads by key, beside the captured one: ((schema.table, key column), ...) (a
    # trigger's related tables); the connection's health checks that each can still be read.
    related: tuple[tuple[str, str], ...] = ()
    # Columns the use reads by name, of its own table or of a related one: ((schema.table, column), ...) (a
    # trigger's reference columns, recipient and organization paths); the health checks each is still there.
    columns: tuple[tuple[str, str], ...] = ()


def capture_uses(*, connection) -> list[CaptureUse]:
    """Every live use of a capture on `connection`, endpoints' before workflows', each oldest first (so that
    where two saved definitions of one capture differ, the newest of a kind wins the same way at every tick)."""
    uses = [use for user in capture_users for use in user(connection=connection)]
    return sorted(uses, key=lambda use: use.kind)  # stable: keeps each kind's own order
