"""One error family for the services, and one JSON error shape for every API answer.

Every error body looks like:

    {"error": {"code": "invalid", "message": "...", "fields": [{"field": "to[0].email", "reason": "..."}]}}

`fields` is present only when specific input fields are at fault.
"""

from __future__ import annotations

from django.core.exceptions import PermissionDenied
from django.http import Http404
from rest_framework import exceptions as drf_exceptions
from rest_framework import status
from rest_framework.response import Response


class ApplicationError(Exception):
    """A domain error raised by a service; the API layer maps it to HTTP."""

    code = "error"
    http_status = status.HTTP_400_BAD_REQUEST

    def __init__(self, message: str, *, field: str | None = None, fields: dict | None = None):
        super().__init__(message)
        self.message = message
        self.fields = dict(fields or {})
        if field:
            self.fields[field] = message

    def extra(self) -> dict:
        """More structured detail for the error body (e.g. itemized checks)."""
        return {}


class InvalidInput(ApplicationError):
    code = "invalid"


class NotFound(ApplicationError):
    code = "not_found"
    http_status = status.HTTP_404_NOT_FOUND


class Conflict(ApplicationError):
    code = "conflict"
    http_status = status.HTTP_409_CONFLICT


class Forbidden(ApplicationError):
    code = "forbidden"
    http_status = status.HTTP_403_FORBIDDEN


class TooManyRequests(drf_exceptions.APIException):
    """429 Too Many Requests (RFC 6585 section 4). `wait` (seconds) becomes the `Retry-After` header (RFC 9110
    section 10.2.3) and `retry_after` in the body; `field` names the input at fault, if one is (e.g.
    `Authorization` when failed authentications are being throttled)."""

    status_code = status.HTTP_429_TOO_MANY_REQUESTS
    default_code = "throttled"

    def __init__(self, message: str, *, wait: int, field: str | None = None):
        super().__init__(detail=message, code=self.default_code)
        self.wait = max(1, int(wait))
        self.fields = [{"field": field, "reason": message}] if field else None


def flatten_errors(detail, prefix: str = "") -> list[dict]:
    """Turn DRF's nested error detail into a flat list of {field, reason}.

    Nested dicts become dotted paths and lists become [index] so that a client can point at
    `to[2].email` or `steps[1].subject` directly.
    """
    out: list[dict] = []
    if isinstance(detail, dict):
        for key, value in detail.items():
            if key in ("non_field_errors", "__all__"):
                path = prefix
            elif isinstance(key, int):  # ListField errors come keyed by index
                path = f"{prefix}[{key}]"
            elif prefix:
                path = f"{prefix}.{key}" if not str(key).startswith("[") else f"{prefix}{key}"
            else:
                path = str(key)
            out.extend(flatten_errors(value, path))
    elif isinstance(detail, list):
        if detail and all(not isinstance(d, (dict, list)) for d in detail):
            for reason in detail:
                out.append({"field": prefix or None, "reason": str(reason)})
        else:
            for index, value in enumerate(detail):
                if value in ({}, [], None):
                    continue
                out.extend(flatten_errors(value, f"{prefix}[{index}]"))
    else:
        out.append({"field": prefix or None, "reason": str(detail)})
    return out


def error_body(code: str, message: str, fields: list[dict] | None = None) -> dict:
    body: dict = {"error": {"code": code, "message": message}}
    if fields:
        body["error"]["fields"] = fields
    return body


def _media_type_refused(exc: drf_exceptions.UnsupportedMediaType, context) -> drf_exceptions.UnsupportedMediaType:
    """The 415 (RFC 9110 section 15.5.16) of DRF, saying what to send instead: the media types the view's
    parsers read, named in the message and against the `Content-Type` field."""
    request = context.get("request")
    accepted = [parser.media_type for parser in getattr(request, "parsers", None) or []]
    sent = getattr(request, "content_type", "") or "none"
    if accepted == ["application/json"] or not accepted:
        advice = 'send the body as JSON, with the header "Content-Type: application/json"'
    else:
        advice = "send the body as one of " + ", ".join(accepted) + ", naming it in the Content-Type header"
    refused = drf_exceptions.UnsupportedMediaType(
        sent, detail=f'The body\'s media type "{sent}" is not read here: {advice}.'
    )
    refused.fields = [{"field": "Content-Type", "reason": f'"{sent}" is not accepted; {advice}.'}]
    return refused


def api_exception_handler(exc, context):
    """DRF's EXCEPTION_HANDLER: every error, ours or DRF's, in the one shape."""
    if isinstance(exc, ApplicationError):
        fields = [{"field": k, "reason": v} for k, v in exc.fields.items()] or None
        body = error_body(exc.code, exc.message, fields)
        body["error"].update(exc.extra())
        return Response(body, status=exc.http_status)
    if isinstance(exc, Http404):
        exc = drf_exceptions.NotFound()
    elif isinstance(exc, PermissionDenied):
        exc = drf_exceptions.PermissionDenied()
    if not isinstance(exc, drf_exceptions.APIException):
        return None  # a bug: let Django log it and answer with handler500

    headers = {}
    if getattr(exc, "auth_header", None):
        headers["WWW-Authenticate"] = exc.auth_header
    if getattr(exc, "wait", None):
        headers["Retry-After"] = str(int(exc.wait))

    if isinstance(exc, drf_exceptions.UnsupportedMediaType):
        exc = _media_type_refused(exc, context)
    if isinstance(exc, drf_exceptions.ValidationError):
        fields = flatten_errors(exc.detail)
        return Response(
            error_body("invalid", "The request has invalid fields.", fields),
            status=exc.status_code,
            headers=headers,
        )
    detail = exc.detail
    message = str(detail) if not isinstance(detail, (dict, list)) else "Request failed."
    code = exc.get_codes() if isinstance(exc.get_codes(), str) else exc.default_code
    body = error_body(code, message, getattr(exc, "fields", None))
    if "Retry-After" in headers:
        body["error"]["retry_after"] = int(headers["Retry-After"])
    return Response(body, status=exc.status_code, headers=headers)
