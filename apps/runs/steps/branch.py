"""`branch`: the first branch whose condition holds runs its steps, else `otherwise`; then the steps after
the branch. The program (apps.workflows.program) compiles a branch to an instruction that jumps to the
chosen block; this step type makes the choice and records it.
"""

from __future__ import annotations

from apps.workflows.conditions import first_holding

from .base import StepCall, StepOutcome, StepType, step_type_register


class BranchStep(StepType):
    name = "branch"
    batchable = True

    def execute(self, call: StepCall) -> StepOutcome:
        taken, target = call.instruction.choose(call.context)
        return StepOutcome(output={"branch": "otherwise" if taken is None else taken}, next_pc=target)

    @staticmethod
    def preview(*, step: dict, context: dict, product=None) -> dict:
        """Which way the sample goes: {"taken": index of the branch, or "otherwise"}."""
        taken = first_holding([b["when"] for b in step["branches"]], context)
        return {"taken": "otherwise" if taken is None else taken}


step_type_register(BranchStep())
