"""Trigger sources, one module each, behind one registry keyed by name (see base.py for the contract).

A new source is a module in this folder that defines a `TriggerSource`, registers it and launches its
runs with `source` set to its name and `cause_id` to its cause (no migration of runs_run), plus its import
in apps/runs/apps.py (`ready()`: every source is registered before any run executes). How a workflow
chooses it (its definition's `trigger.type`) is validated by the workflows app.

The modules are imported by `ready()`, not here: they launch runs through the engine, which reads this
registry.
"""

from .base import TRIGGER_SOURCES, TriggerSource, trigger_source_get, trigger_source_register

__all__ = ["TRIGGER_SOURCES", "TriggerSource", "trigger_source_get", "trigger_source_register"]
