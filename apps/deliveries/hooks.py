"""What deliveries hands up to the apps built on it, through registries they fill in `ready()`.

Each function is called inside the caller's transaction (see apps/core/registry.py):

- `deliveries_settled(settled=[(run id, step id, sent: bool, why not: str), ...])`: deliveries of runs
  reached a final status; the runs waiting on them move on (apps.runs).
- `endpoint_enabled(endpoint=WebhookEndpoint, actor=str)`: an endpoint was enabled again; what it needs
  outside Rowbell (a row-event subscription's trigger in the customer database) is put back (apps.subscriptions).
- `endpoints_disabled(endpoints=[(endpoint id, connection id or None), ...], actor=str)`: endpoints were
  disabled; what only they needed is retired, by queued actions (apps.subscriptions).
"""

from __future__ import annotations

from apps.core.registry import Registry

deliveries_settled = Registry("deliveries.deliveries_settled")
endpoint_enabled = Registry("deliveries.endpoint_enabled")
endpoints_disabled = Registry("deliveries.endpoints_disabled")


def runs_settle(settled: list[tuple]) -> None:
    """Hand settled deliveries (run id, step id, sent or not, why not) to the runs waiting on them. Call inside
    the transaction that finalized the deliveries."""
    if settled:
        deliveries_settled.call_each(settled=settled)
