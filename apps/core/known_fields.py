"""Input fields nobody declared are refused, never ignored.

A body field that a serializer does not declare used to be dropped silently, so a typo went unseen:
`{"datta": {...}}` started a run without its data, and a workflow created with `"sandbx": true` really sent.
Every such field is a 400 that names it, says why, and suggests the field meant (difflib's close matches).
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping

from rest_framework import serializers


def unknown_field_reason(name: str, known: list[str], noun: str | None = None) -> str:
    """ "Unknown field. Did you mean 'data'?", or the fields there are when none is close."""
    where = f" for {noun}" if noun else ""
    close = difflib.get_close_matches(str(name), known, n=1, cutoff=0.6)
    if close:
        return f"Unknown field{where}. Did you mean '{close[0]}'?"
    return f"Unknown field{where}: remove it. The fields are: {', '.join(known)}."


class KnownFieldsOnly:
    """Serializer mixin: an input field the serializer does not declare is an error naming it (with the
    serializer's own field errors, in one answer)."""

    def to_internal_value(self, data):
        unknown = {}
        if isinstance(data, Mapping):
            known = [name for name, field in self.fields.items() if not field.read_only]
            unknown = {key: [unknown_field_reason(key, known)] for key in data if key not in known}
        try:
            value = super().to_internal_value(data)
        except serializers.ValidationError as exc:
            if unknown and isinstance(exc.detail, dict):
                raise serializers.ValidationError({**exc.detail, **unknown}) from None
            raise
        if unknown:
            raise serializers.ValidationError(unknown)
        return value
