"""The definition format's JSON Schema: served at `GET /api/v1/workflows/schema.json`, and the source of the
typed workflow bodies in the OpenAPI description (apps/workflows/openapi.py)."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from pydantic import TypeAdapter
from pydantic.json_schema import GenerateJsonSchema

from .format import WorkflowCreate


class FormatJsonSchema(GenerateJsonSchema):
    """Pydantic's JSON Schema, without a title on every field (the field's name says it)."""

    def field_title_should_be_set(self, schema) -> bool:
        return False


def _without_null_defaults(schema):
    # An absent field is absent, not null: `"default": null` would invite a null the type refuses.
    if isinstance(schema, dict):
        return {k: _without_null_defaults(v) for k, v in schema.items() if not (k == "default" and v is None)}
    if isinstance(schema, list):
        return [_without_null_defaults(v) for v in schema]
    return schema


def format_json_schema(part: Any = None, *, ref_template: str = "#/$defs/{model}") -> dict:
    """The JSON Schema (draft 2020-12) of a part of the format (a model such as `Definition`, or a type
    such as `list[Step]`; by default the body of `POST /api/v1/workflows`), as input: durations may be text.
    Sub-schemas are under `$defs`, referred to by `ref_template`."""
    adapter = TypeAdapter(part if part is not None else WorkflowCreate)
    schema = adapter.json_schema(mode="validation", ref_template=ref_template, schema_generator=FormatJsonSchema)
    return _without_null_defaults(schema)


@lru_cache(maxsize=1)
def workflow_json_schema() -> dict:
    """The document served at `GET /api/v1/workflows/schema.json`: the JSON Schema of a workflow as
    `POST /api/v1/workflows` takes it (`PUT` takes the same without `key`)."""
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        **format_json_schema(),
        "title": "Rowbell workflow",
    }
