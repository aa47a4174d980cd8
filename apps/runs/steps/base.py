"""What a step type is, and the registry the run interpreter (apps.runs.engine) dispatches through.

A step type is one module in this folder: a `StepType` subclass with its `name` (the `type` of steps in
a definition) and its `execute`, registered with `step_type_register` when the module is imported
(apps/runs/steps/__init__.py imports each one).

`execute(call)` runs when a run reaches a step of the type, and returns a StepOutcome (what the step
produced, whether the run waits, where it goes next), or raises StepFailed (permanent: the run fails now)
or StepRetry (transient: the step is tried again later, with the workflow's back-off, until its attempts
run out). It writes nothing itself that `call` can write for it (`call.deliver`): the interpreter writes
what it stages together with the step's row and the run's new position, in one transaction per step (a
run on its own) or in one transaction for a whole batch of runs (apps.runs.engine). A type that must write
its own rows or lock others (the batch step) leaves `batchable` false: a batch hands the run over to its
own transactions when it reaches such a step.

`preview`, when a type has one, shows what a step would do with sample data, sending and recording
nothing: `preview(step=dict, context=dict, product=Product) -> dict`. It is the hook for the workflows
app's preview, as the type's `name` is for its validation (see apps/runs/steps/__init__.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ..models import WaitingOn

if TYPE_CHECKING:
    from apps.workflows.program import Instruction

    from ..models import Run


class StepFailed(Exception):
    """A step that cannot succeed (e.g. a template error): the run fails without retrying."""


class StepRetry(Exception):
    """A step that failed for a reason that may pass (e.g. the customer database is unreachable)."""


@dataclass
class StepOutcome:
    """What one execution of a step came to.

    `output` is what the step produced (kept in the run's state under the step's id, and on its step row);
    `finished` False means the step is not done (a condition that does not hold yet): the run comes back
    to it. `waiting_on` (apps.runs.models.WaitingOn) and `resume_at` make the run wait; `end_run` ends it
    here, completed (a batch member: its owner carries on); `next_pc` is where the run goes on in its
    program (a branch's choice), by default the next instruction.
    """

    output: dict = field(default_factory=dict)
    finished: bool = True
    waiting_on: str = WaitingOn.NOTHING
    resume_at: datetime | None = None
    end_run: bool = False
    next_pc: int | None = None


class StepCall:
    """What a step type's `execute` is given.

    - `run`: the Run (its `state` may be changed: it is written with the step), with its workflow
      version and product loaded;
    - `step`: the step's definition; `instruction`: its instruction in the version's program (a branch's
      cases); `pc`: that instruction's index;
    - `context`: the run's template context (apps.runs.engine.run_context); a step may add to it;
    - `memo`: shared by the renders of one batch of runs (a channel may keep lookups in it), or None.
    """

    __slots__ = ("run", "step", "instruction", "pc", "context", "memo", "_writes", "_source")

    def __init__(
        self,
        *,
        run: Run,
        step: dict,
        instruction: Instruction,
        pc: int,
        context: dict,
        memo: dict | None,
        writes: Any,
        source: Any,
    ):
        self.run, self.step, self.instruction, self.pc = run, step, instruction, pc
        self.context, self.memo = context, memo
        self._writes, self._source = writes, source

    @property
    def sandboxed(self) -> bool:
        """Whether the run's deliveries are held for review (a sandboxed workflow, product or organization)."""
        run = self.run
        return (
            run.workflow_version.workflow.sandbox
            or run.product.sandbox
            or (run.organization_id is not None and run.organization is not None and run.organization.sandbox)
        )

    def deliver(self, delivery, audit) -> None:
        """Stage a delivery built by apps.deliveries.services.delivery_build (and the audit row it came
        with, or None): it is written with the step, and a queued one is sent once that commits."""
        self._writes.delivery(delivery, audit)

    def rows_refresh(self) -> None:
        """Read again, from outside Rowbell, what the run's cause refers to (a database event's rows), so
        that a condition re-checked now sees it as it is; raises StepRetry when it cannot be read now."""
        self._source.refresh(self.run, self.context)


class StepType:
    """A kind of step: its `name` (a definition's `type`), how it executes, and optionally a preview.

    `batchable`: whether a step of this type can execute inside a batch's one transaction, i.e. it writes
    only through `call` and takes no row lock. `batchable_for(step)` may refine it per step.
    """

    name: str = ""
    batchable: bool = False
    preview: Callable[..., dict] | None = None

    def batchable_for(self, step: dict) -> bool:
        return self.batchable

    def execute(self, call: StepCall) -> StepOutcome:
        raise NotImplementedError


STEP_TYPES: dict[str, StepType] = {}


def step_type_register(step_type: StepType) -> StepType:
    """Add a step type under its name (a later registration of the same name replaces it); returns it."""
    if not step_type.name:
        raise ValueError(f"{step_type!r} has no name.")
    STEP_TYPES[step_type.name] = step_type
    return step_type


def step_type_get(name: str) -> StepType:
    """The step type of that name; StepFailed if there is none (a definition this code cannot run)."""
    try:
        return STEP_TYPES[name]
    except KeyError:
        raise StepFailed(f"Unknown step type {name!r}.") from None
