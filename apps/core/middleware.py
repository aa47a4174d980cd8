import logging

from django.db import InterfaceError, OperationalError
from django.http import HttpResponseBadRequest, JsonResponse

from .exceptions import error_body
from .text import NUL_MESSAGE

logger = logging.getLogger(__name__)


class DatabaseUnavailableMiddleware:
    """A lost or unreachable database answers 503 with Retry-After, a clear 'try again', not a 500.

    Nothing was accepted in that case: the write either never reached the database or was rolled
    back with its connection, so the client may safely retry (with its Idempotency-Key).
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_exception(self, request, exception):
        if isinstance(exception, (OperationalError, InterfaceError)):
            logger.warning("Database unavailable during %s %s: %s", request.method, request.path, exception)
            response = JsonResponse(
                error_body("database_unavailable", "The database is unavailable; retry shortly."), status=503
            )
            response["Retry-After"] = "1"
            return response
        return None


class NulParameterMiddleware:
    """A path, query string or form field holding U+0000 answers 400 before any view sees it.

    PostgreSQL refuses NUL in text, so a `?status=%00` that reached a filter (every admin list and API
    list has some) was a 500. Django's form fields already refuse NUL, but list filters, search boxes
    and actions read raw parameters. The check costs a substring test on requests without `%00`.
    Multipart bodies are left alone: a file may hold NUL bytes.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if "\x00" in request.path_info:
            # `%00` in the path: every view that looks a path segment up (a message id, a key prefix, a
            # provider webhook's token) would hand it to PostgreSQL.
            return self._refused(request, None, "The address (path) contains a NUL character (%00).")
        bad = None
        if "%00" in request.META.get("QUERY_STRING", ""):
            bad = _nul_parameter(request.GET)
        if (
            bad is None
            and request.method == "POST"
            and request.content_type == "application/x-www-form-urlencoded"
            and (b"%00" in request.body or b"\x00" in request.body)
        ):
            bad = _nul_parameter(request.POST)
        if bad is None:
            return self.get_response(request)
        return self._refused(request, bad, f"The parameter {bad!r} {NUL_MESSAGE[0].lower()}{NUL_MESSAGE[1:]}")

    @staticmethod
    def _refused(request, field: str | None, message: str):
        if request.path.startswith("/api/"):
            return JsonResponse(
                error_body(
                    "invalid",
                    "The request has invalid fields." if field else message,
                    fields=[{"field": field, "reason": NUL_MESSAGE}] if field else None,
                ),
                status=400,
            )
        return HttpResponseBadRequest(message, content_type="text/plain; charset=utf-8")


def _nul_parameter(params) -> str | None:
    """The name of the first parameter whose name or a value holds U+0000, or None."""
    for name, values in params.lists():
        if "\x00" in name or any("\x00" in value for value in values):
            return name.replace("\x00", "\\u0000")
    return None
