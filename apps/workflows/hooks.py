"""What workflows hands up to the apps built on it, through registries they fill in `ready()` (see
apps/core/registry.py). Each function is called inside the caller's transaction:

- `runs_cancel`: `cancel(workflow=Workflow, actor=str) -> int` cancels the workflow's queued and waiting runs
  (unpublish with `cancel_runs`) and returns how many (apps.runs).
"""

from __future__ import annotations

from apps.core.registry import Registry

runs_cancel = Registry("workflows.runs_cancel")
