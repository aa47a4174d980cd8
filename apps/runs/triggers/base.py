"""What a trigger source is, and the registry the run interpreter (apps.runs.engine) reads it from.

A trigger source is where runs come from: the trigger API (`api`: one run per recipient of an accepted
request) or row changes in a customer database (`database`: one run per recorded event and published
version that watches it). Each is one module in this folder with its `TriggerSource` subclass, registered
under its name, which is a definition's `trigger.type` and a run's `source`:

- how its runs are launched: a function of the module (apps.runs.triggers.api.requests_start,
  apps.runs.triggers.database.runs_for_events), called by a task or an event consumer;
- what a run's template context gets from it (`load` in bulk for a batch of runs, then `context`);
- what its runs' audit rows say started them (`cause`, from a run's `cause_id` alone);
- whether something outside Rowbell must be read before the run's first step (`prepare_needed`,
  `prepare`) and again when a wait re-checks its condition (`refresh`).

A run records its cause as (`source`, `cause_id`), so a new source needs no migration of runs_run; launch
stays idempotent through the unique (workflow version, source, cause id, recipient index) of runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..models import Run


class TriggerSource:
    """One kind of trigger. Subclasses set `name` and override what applies to them."""

    name: str = ""
    # The definition's `trigger.type` of the workflows this source starts: its own name, unless it starts
    # another type's workflows (a backfill starts a database trigger's).
    definition_type: str = ""

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if not cls.__dict__.get("definition_type"):
            cls.definition_type = cls.name

    def load(self, runs: list[Run]) -> None:
        """Load, in a few queries for the whole list, what `context` needs of each run's cause (runs read
        from the database; a launch that built its runs attaches it itself)."""

    def context(self, run: Run, context: dict) -> None:
        """Add this source's entries to a run's template context (apps.runs.engine.run_context): the
        common ones are `data` ({}), `recipient`, `workflow`, `request_id` (None), `run_id`, `timestamp`,
        `steps`."""

    def cause(self, cause_id: str) -> dict:
        """What started a run whose `cause_id` this is, as its audit rows say it (e.g. {"request_id": "..."})."""
        return {"source": self.name, "cause_id": cause_id}

    def prepare_needed(self, run: Run) -> bool:
        """Whether `prepare` must read something outside Rowbell before the run's next step."""
        return False

    def prepare(self, run: Run, context: dict) -> None:
        """Read it into the run's state and context; raise apps.runs.steps.StepRetry when it cannot be
        read now (it is saved with the run's next step)."""

    def prepare_many(self, runs: list[Run]) -> None:
        """What `prepare` reads, for many runs at once where the source can (e.g. rows by key in one query),
        into each run's state, so that `prepare_needed` is then false for them. Called inside a batch's
        transaction with runs that need it; a run it cannot prepare is left as it was (`prepare` then reads
        for it alone, and says why it cannot). Never raises for what it reads."""

    def refresh(self, run: Run, context: dict) -> None:
        """Read again what a condition re-checked now must see (a wait step); StepRetry as for prepare."""


TRIGGER_SOURCES: dict[str, TriggerSource] = {}


def trigger_source_register(source: TriggerSource) -> TriggerSource:
    """Add a trigger source under its name; returns it."""
    if not source.name:
        raise ValueError(f"{source!r} has no name.")
    TRIGGER_SOURCES[source.name] = source
    return source


def trigger_source_get(name: str) -> TriggerSource:
    """The trigger source of that name (KeyError if none is registered: apps.runs.triggers imports each)."""
    return TRIGGER_SOURCES[name]
