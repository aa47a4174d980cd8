"""A definition compiled to a flat program, so that a run's whole position is one integer.

Steps run in order; a `branch` becomes an instruction that jumps to the first block whose condition
holds (or to `otherwise`), and each block ends with a jump past the branch. A run stores the index of
its next instruction (`Run.step_index`): resuming after a wait or a crash is resuming at that index.

    steps: [notify A, branch{when c: [wait W, notify B]; otherwise: [notify C]}, notify D]
    program: 0 notify A | 1 branch (c -> 2, else -> 5) | 2 wait W | 3 notify B | 4 jump 6 | 5 notify C | 6 notify D
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Instruction:
    op: str  # "step" (notify, wait, batch), "branch" or "jump"
    step: dict = field(default_factory=dict)
    cases: tuple = ()  # branch: ((condition, target), ...), first that holds wins
    otherwise: int = 0  # branch: the target when no case holds
    to: int = 0  # jump: the target

    def choose(self, context: dict) -> tuple[int | None, int]:
        """A branch's choice on this data: (index of the case taken, or None for otherwise; next pc)."""
        from .conditions import first_holding

        taken = first_holding([when for when, _ in self.cases], context)
        return taken, self.otherwise if taken is None else self.cases[taken][1]


def program_compile(steps: list[dict]) -> list[Instruction]:
    program: list[Instruction] = []

    def emit(steps):
        for step in steps:
            if step["type"] != "branch":
                program.append(Instruction(op="step", step=step))
                continue
            at = len(program)
            program.append(Instruction(op="branch"))  # patched below, once the targets are known
            starts, jumps = [], []
            for block in [b["steps"] for b in step["branches"]] + [step["otherwise"]]:
                starts.append(len(program))
                emit(block)
                jumps.append(len(program))
                program.append(Instruction(op="jump"))
            end = len(program)
            for index in jumps:
                program[index] = Instruction(op="jump", to=end)
            cases = tuple((b["when"], start) for b, start in zip(step["branches"], starts))
            program[at] = Instruction(op="branch", step=step, cases=cases, otherwise=starts[-1])

    emit(steps)
    return program


_programs: dict[int, list[Instruction]] = {}


def program_for(version) -> list[Instruction]:
    """The compiled program of a workflow version (immutable, so compiled once per process)."""
    program = _programs.get(version.id)
    if program is None:
        if len(_programs) > 10_000:
            _programs.clear()
        program = _programs[version.id] = program_compile(version.definition["steps"])
    return program


def notify_steps(steps: list[dict]):
    """Every notify step of a definition, branches included, in order."""
    for step in steps:
        if step["type"] == "branch":
            for branch in step["branches"]:
                yield from notify_steps(branch["steps"])
            yield from notify_steps(step["otherwise"])
        elif step["type"] == "notify":
            yield step


def programs_by_version(version_ids) -> dict[int, list[Instruction]]:
    """The programs of these versions, by version id, loading only the ones not compiled yet."""
    from .models import WorkflowVersion

    found = {vid: _programs[vid] for vid in version_ids if vid in _programs}
    missing = set(version_ids) - set(found)
    if missing:
        for version in WorkflowVersion.objects.filter(id__in=missing).only("id", "definition"):
            found[version.id] = program_for(version)
    return found
