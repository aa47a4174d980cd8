"""The definition format in the OpenAPI description (drf-spectacular): typed steps, not an opaque object.

- A request body declared with a format model (`extend_schema(request=WorkflowCreate)`) is described by the
  model's JSON Schema, as input (durations may be text); drf-spectacular's own pydantic extension describes
  models as output, which would say durations are numbers.
- A part of a definition in an answer (`FormatField(format_type=list[Step])`) is described by its type.

Either way the sub-schemas (`EmailNotify`, `Branch`...) become components, written as OpenAPI 3.0 has them:
`const` is a one-value `enum` there, named after its component (`WaitUntilTypeEnum`), since many components
have a `type` of their own.

One difference from the JSON Schema: the format is recursive (a branch holds steps, which may be branches; an
`and` holds conditions), and tools that walk a description case by case multiply with every level: the fuzz
run over this description (tests/api/test_fuzz.py) made over 7,000 requests per key for a workflow body with
the recursion, under 1,000 without, and ten minutes longer. Here a branch's steps and an `and`/`or`'s conditions are objects that
refer to `Step`/`Condition` in words; the workflow's own steps, its trigger, retry and tracking are typed in
full. `GET /api/v1/workflows/schema.json` has the whole recursive format.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.contrib.pydantic import PydanticExtension
from drf_spectacular.extensions import OpenApiSerializerFieldExtension
from drf_spectacular.plumbing import ResolvedComponent
from pydantic import BaseModel
from rest_framework import serializers

from .definition.format import AllOf, AnyOf, Branch, Case
from .definition.json_schema import format_json_schema

# Where the format refers to itself: (component, property) -> what its items are, in words.
NESTED = {
    (Case.__name__, "steps"): "A step, as in the workflow's `steps`.",
    (Branch.__name__, "otherwise"): "A step, as in the workflow's `steps`.",
    (AllOf.__name__, "and"): "A condition, as in `when`.",
    (AnyOf.__name__, "or"): "A condition, as in `when`.",
}


def openapi_schema(part: Any, registry, *, as_component: bool = False) -> dict:
    """The schema of a part of the format, with its sub-schemas registered as components; with
    `as_component`, a model is a component too, and the answer refers to it."""
    schema = format_json_schema(part, ref_template="#/components/schemas/{model}")
    for name, sub in schema.pop("$defs", {}).items():
        _register(registry, name, sub)
    if as_component and isinstance(part, type) and issubclass(part, BaseModel):
        return _register(registry, part.__name__, schema).ref
    return _openapi30(schema, "")


def _register(registry, name: str, schema: dict) -> ResolvedComponent:
    schema = _openapi30(schema, name)
    for prop, sub in schema.get("properties", {}).items():
        if (name, prop) in NESTED:
            sub["items"] = {
                "type": "object",
                "description": NESTED[name, prop] + " The whole recursive format: /api/v1/workflows/schema.json.",
            }
    component = ResolvedComponent(name=name, type=ResolvedComponent.SCHEMA, object=name, schema=schema)
    registry.register_on_missing(component)
    return component


def _openapi30(schema, component: str, prop: str = ""):
    """`schema` as OpenAPI 3.0 writes it; `prop` is the property it describes, if any."""
    if isinstance(schema, list):
        return [_openapi30(item, component) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "properties":
            out[key] = {name: _openapi30(sub, component, name) for name, sub in value.items()}
        elif key == "const":
            out["enum"] = [value]
            # drf-spectacular names an enum by its values, and a `type` of "wait" is in three components: an id
            # of its own names each after its component (`WaitUntilTypeEnum`).
            out["x-spec-enum-id"] = f"{component}.{prop}"
        else:
            out[key] = _openapi30(value, component)
    return out


class FormatModelExtension(PydanticExtension):
    target_class = "apps.workflows.definition.format.FormatModel"
    match_subclasses = True
    priority = 1  # before drf-spectacular's own, which takes every pydantic model

    def map_serializer(self, auto_schema, direction):
        return openapi_schema(self.target, auto_schema.registry)


class FormatField(serializers.JSONField):
    """A part of a definition in an answer (the trigger, the steps, the retry policy), as stored."""

    def __init__(self, *, format_type: Any, **kwargs):
        self.format_type = format_type
        super().__init__(**kwargs)


class FormatFieldExtension(OpenApiSerializerFieldExtension):
    target_class = FormatField
    match_subclasses = True

    def map_serializer_field(self, auto_schema, direction):
        return openapi_schema(self.target.format_type, auto_schema.registry, as_component=True)
