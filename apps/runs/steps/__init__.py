"""Step types, one module each, behind one registry keyed by type name (see base.py for the contract).

A new step type is a module in this folder that defines a `StepType` and registers it, plus its import
below. Its validation belongs to the workflows app (apps.workflows.definition), which checks every step of
a definition when it is saved: a type runs here only once a definition may contain it. The hook between
the two is the name: the definition's validators are keyed by the same `type` names as STEP_TYPES (a
check that both sides know the same names is a one-liner), and a type's optional `preview` is what the
workflows app's preview can call for it (workflows sits below runs, so it would reach the previews
through a registry it owns and apps.runs fills in `ready()`, as apps/workflows/hooks.py does).
"""

from . import batch, branch, notify, wait  # noqa: F401 (each registers its type)
from .base import STEP_TYPES, StepCall, StepFailed, StepOutcome, StepRetry, StepType, step_type_get, step_type_register

__all__ = [
    "STEP_TYPES",
    "StepCall",
    "StepFailed",
    "StepOutcome",
    "StepRetry",
    "StepType",
    "step_type_get",
    "step_type_register",
]
