"""Pydantic's errors in the API's words: a path into the input (`steps[1].branches[0].steps[0].subject`) and
a sentence that says what to send.

Pydantic locates an error by a `loc` tuple that also holds the tags of the unions it went through
(`("steps", 1, "notify", "email", "subject")`). `error_path` walks that tuple through the model's own types,
so a tag is known as a tag (never confused with a field of the same name), and the path keeps the fields and
indexes only. The walk also finds the model the error is in, which says what its unknown field could have been
(the close matches among its fields) and what a missing field expects (`format.Says`).
"""

from __future__ import annotations

import types
from typing import Annotated, Any, TypeVar, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails

from apps.core.known_fields import unknown_field_reason

from .values import Says

_JSON_TYPES = {
    str: "a string",
    bool: "true or false",
    int: "a number",
    float: "a number",
    list: "a list",
    dict: "an object",
    type(None): "null",
}
_EXPECTED = {
    "string_type": "a string",
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "an integer",
    "float_type": "a number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "list_type": "a list",
    "dict_type": "an object",
    "model_type": "an object",
    "model_attributes_type": "an object",
}


_Model = TypeVar("_Model", bound=BaseModel)


def structure_check(model: type[_Model], data: Any) -> tuple[_Model | None, dict[str, list[str]]]:
    """Validate `data` with `model`. Returns (the model instance, {}) or (None, {path: [reasons]}), with
    every error found at once. Never raises for bad input."""
    try:
        return model.model_validate(data), {}
    except ValidationError as exc:
        errors: dict[str, list[str]] = {}
        for error in exc.errors(include_url=False):
            path, reason = error_describe(model, error)
            reasons = errors.setdefault(path, [])
            if reason not in reasons:
                reasons.append(reason)
        return None, errors


def error_describe(model: type[BaseModel], error: ErrorDetails) -> tuple[str, str]:
    """One pydantic error (from `ValidationError.errors()`) as (path, reason)."""
    parts, owner, field = _walk(model, tuple(error["loc"]))
    kind, context = error["type"], error.get("ctx") or {}
    if isinstance(context.get("field"), str):  # a check on an object about one of its fields (format.OneOf)
        parts.append(context["field"])
    return path_format(parts), _reason(kind, error, context, owner, field, parts)


def path_format(parts: list) -> str:
    """["steps", 1, "subject"] -> "steps[1].subject"."""
    path = ""
    for part in parts:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path


def _reason(kind: str, error: ErrorDetails, context: dict, owner, field: FieldInfo | None, parts: list) -> str:
    if kind == "missing":
        says = _says(field)
        return "This field is required." + (f" {says}" if says else "")
    if kind == "extra_forbidden" and owner is not None:
        return unknown_field_reason(str(parts[-1]), _field_names(owner), owner.noun)
    if kind in _EXPECTED:
        return f"Must be {_EXPECTED[kind]}, not {_json_type(error.get('input'))}."
    if kind == "string_too_short":
        return (
            "This field may not be blank."
            if context.get("min_length") == 1
            else f"At least {context.get('min_length')} characters."
        )
    if kind == "string_too_long":
        return f"At most {context.get('max_length')} characters."
    if kind == "too_short":
        return f"At least {context.get('min_length')} item{'s' if context.get('min_length') != 1 else ''}."
    if kind == "too_long":
        return f"At most {context.get('max_length')} items."
    if kind == "string_pattern_mismatch":
        return _says(field) or f"Must match {context.get('pattern')}."
    if kind == "literal_error":
        return f"One of: {context.get('expected')}."
    if kind in ("recursion_loop", "recursion_depth_exceeded"):
        return "Nested too deeply: flatten it."
    message = error["msg"]
    return message if message.endswith(".") else message + "."


def _field_names(model: type[BaseModel]) -> list[str]:
    return [info.alias or name for name, info in model.model_fields.items()]


def _says(field: FieldInfo | None) -> str:
    if field is None:
        return ""
    return next((m.message for m in field.metadata if isinstance(m, Says)), "")


def _json_type(value) -> str:
    return _JSON_TYPES.get(type(value), type(value).__name__)


def _walk(model: type[BaseModel], loc: tuple) -> tuple[list, type[BaseModel] | None, FieldInfo | None]:
    """Follow `loc` through the types: (the path's parts, the model the last field belongs to, that field)."""
    parts: list = []
    annotation: Any = model
    owner, field = None, None
    index = 0
    while index < len(loc):
        item = loc[index]
        annotation = _bare(annotation)
        if get_origin(annotation) in (Union, types.UnionType):
            tagged = {_tag(member): member for member in get_args(annotation)}
            if item not in tagged:
                break  # an untagged union names its member types: not a place in the input
            annotation, index = tagged[item], index + 1
            continue
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            owner, field = annotation, _field(annotation, item)
            parts.append(item)
            index += 1
            if field is None:  # an unknown field: the rest is inside it
                parts.extend(loc[index:])
                break
            annotation = Annotated[(field.annotation, *field.metadata)] if field.metadata else field.annotation
            continue
        if get_origin(annotation) in (list, dict):
            parts.append(item)
            index += 1
            annotation, field = get_args(annotation)[-1], None
            continue
        parts.extend(loc[index:])
        break
    return parts, owner, field


def _bare(annotation):
    while get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    return annotation


def _tag(member) -> str | None:
    if get_origin(member) is Annotated:
        for meta in get_args(member)[1:]:
            if type(meta).__name__ == "Tag":
                return meta.tag
    return None


def _field(model: type[BaseModel], name) -> FieldInfo | None:
    for key, info in model.model_fields.items():
        if (info.alias or key) == name:
            return info
    return None
