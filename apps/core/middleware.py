import logging

from django.db import InterfaceError, OperationalError
from django.http import JsonResponse

from .exceptions import error_body

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
