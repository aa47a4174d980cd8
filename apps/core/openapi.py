"""The OpenAPI description says what the API answers, errors and pages included (drf-spectacular).

drf-spectacular documents the success answer of each operation. Rowbell's error answers all share one
shape (apps/core/exceptions.py), and which of them an operation can give follows from what it is:

- every operation behind a key: 401 (no or a wrong key), 403 (the key's scope may not do this),
  429 (throttled) and 503 (the database is unavailable; retry);
- an operation that reads input (a body or query parameters): 400, naming the fields at fault;
- one with a body: 413 (too large) and 415 (not JSON);
- one whose path names a resource: 404.

A view adds the codes that are its own (e.g. 409) with `error_codes = {409: "..."}`. A list view that pages
sets `pagination_class`; its answer is documented as the page object (`next`, `previous`, `results`) with
the `cursor` and `limit` parameters, as apps/core/pagination.py answers.
"""

from __future__ import annotations

from drf_spectacular.openapi import AutoSchema
from rest_framework import serializers
from rest_framework.permissions import AllowAny

ERROR_DESCRIPTIONS = {
    400: "The input is not valid: `error.fields` names each field at fault, why, and what to send.",
    401: "No API key, or a key that is not valid: send `Authorization: Api-Key <key>`.",
    403: "The key's scope (platform, product, organization) may not do this.",
    404: "No such resource for this key.",
    409: "The request conflicts with the current state.",
    413: "The request body is larger than ROWBELL_MAX_BODY_BYTES.",
    415: "The body is not JSON: send `Content-Type: application/json`.",
    429: "Too many requests for this key or client: wait for `Retry-After` seconds.",
    503: "The database is unavailable: nothing was accepted; retry after `Retry-After` seconds.",
}


class ErrorFieldSerializer(serializers.Serializer):
    field = serializers.CharField(allow_null=True, help_text="Path into the input, e.g. `to[0].email`.")
    reason = serializers.CharField()


class ErrorDetailSerializer(serializers.Serializer):
    code = serializers.CharField(help_text="A stable machine-readable code, e.g. `invalid`, `not_found`.")
    message = serializers.CharField()
    fields = ErrorFieldSerializer(many=True, required=False)


class ErrorSerializer(serializers.Serializer):
    """Every error answer: `{"error": {"code", "message", "fields"?}}` (apps/core/exceptions.py)."""

    error = ErrorDetailSerializer()


class RowbellAutoSchema(AutoSchema):
    """drf-spectacular's AutoSchema, with each operation's error answers (see the module docstring)."""

    def _error_codes(self) -> set[int]:
        view = self.view
        public = any(isinstance(p, AllowAny) for p in view.get_permissions())
        codes = set() if public else {401, 403, 429, 503}
        if self.method in ("POST", "PUT", "PATCH"):
            codes |= {400, 413, 415}
        if any(p.get("in") == "query" for p in self._get_parameters()):
            codes.add(400)
        if "{" in self.path:
            codes.add(404)
        codes |= set(getattr(view, "error_codes", {}))
        return codes

    def _get_response_bodies(self, direction="response"):
        bodies = super()._get_response_bodies(direction)
        own = getattr(self.view, "error_codes", {})
        for code in sorted(self._error_codes()):
            if str(code) in bodies:
                continue
            response = self._get_response_for_code(ErrorSerializer, str(code), direction=direction)
            response["description"] = own.get(code) or ERROR_DESCRIPTIONS[code]
            bodies[str(code)] = response
        return bodies
