from django.db import connection
from django.http import JsonResponse
from django.views.decorators.csrf import csrf_exempt

from .exceptions import error_body


def not_found(request, exception=None):
    return JsonResponse(error_body("not_found", "Not found."), status=404)


@csrf_exempt  # any method: a POST to no endpoint is a 404, not a missing CSRF token's HTML 403
def api_not_found(request, rest: str = ""):
    """The JSON 404 of any path under /api/v1/ that names no endpoint, whatever DEBUG says (Django's debug page
    is HTML), saying that API paths take no trailing slash when the path without it is an endpoint."""
    from django.urls import Resolver404, resolve

    message = f"No endpoint at {request.path}: the API reference is at /api/docs/."
    if request.path.endswith("/") and request.path.rstrip("/"):
        try:
            match = resolve(request.path.rstrip("/"))
        except Resolver404:
            match = None
        if match is not None and match.func is not api_not_found:
            message = (
                f"No endpoint at {request.path}: API paths take no trailing slash; use {request.path.rstrip('/')}."
            )
    return JsonResponse(error_body("not_found", message), status=404)


def server_error(request):
    return JsonResponse(error_body("server_error", "Internal error; it has been logged."), status=500)


def health(request):
    """Liveness and database reachability, for load balancers and `make run`'s wait loop."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return JsonResponse({"status": "ok"})


def ping(request):
    """The smallest Django JSON view: the baseline the API benchmark compares against."""
    return JsonResponse({"ok": True})
