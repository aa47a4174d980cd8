from django.db import connection
from django.http import JsonResponse

from .exceptions import error_body


def not_found(request, exception=None):
    return JsonResponse(error_body("not_found", "Not found."), status=404)


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
