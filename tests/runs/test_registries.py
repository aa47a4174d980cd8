"""The definition format and the engine name the same step types and trigger sources."""

from apps.runs.steps import STEP_TYPES
from apps.runs.triggers import TRIGGER_SOURCES
from apps.workflows.definition import format as definition_format


def test_every_step_type_the_format_accepts_is_one_the_engine_executes_and_the_reverse():
    assert set(definition_format.STEP_TYPES) == set(STEP_TYPES)


def test_every_trigger_type_the_format_accepts_is_a_source_the_engine_launches_and_the_reverse():
    # A source may start another type's workflows (a backfill starts a database trigger's): it says which.
    assert set(definition_format.TRIGGER_TYPES) <= set(TRIGGER_SOURCES)
    assert {source.definition_type for source in TRIGGER_SOURCES.values()} == set(definition_format.TRIGGER_TYPES)
