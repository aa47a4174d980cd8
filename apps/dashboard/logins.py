"""Admin login lockout with back-off, on django-axes (its settings: config/settings/base.py).

A username signing in from one address is locked out after AXES_FAILURE_LIMIT failures, for
ROWBELL_LOGIN_COOLOFF_SECONDS; every further failure while locked (axes counts them and restarts the lock)
doubles the wait, up to ROWBELL_LOGIN_COOLOFF_MAX_SECONDS. The locked-out page says how long to wait.
"""

from __future__ import annotations

import math
from datetime import timedelta

from axes.helpers import get_client_username, get_failure_limit
from axes.models import AccessAttempt
from django.conf import settings
from django.contrib import admin
from django.db.models import Sum
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.utils.timesince import timeuntil

from apps.core.ratelimits import client_ip


def lockout_cool_off(request: HttpRequest | None) -> timedelta:
    """AXES_COOLOFF_TIME: how long the lock of this request's username and address lasts after its latest
    failure. The base cool-off, doubled for every failure past the limit, capped at the maximum.

    Axes asks with a request (or none, from its management commands: the base is answered).
    """
    base = timedelta(seconds=settings.ROWBELL_LOGIN_COOLOFF_SECONDS)
    if request is None:
        return base
    failures = AccessAttempt.objects.filter(
        username=get_client_username(request, getattr(request, "axes_credentials", None)),
        ip_address=getattr(request, "axes_ip_address", None) or client_ip(request),
    ).aggregate(n=Sum("failures_since_start"))["n"] or 0
    beyond = max(0, failures - get_failure_limit(request, None))
    seconds = settings.ROWBELL_LOGIN_COOLOFF_SECONDS * 2 ** min(beyond, 32)
    return timedelta(seconds=min(seconds, max(settings.ROWBELL_LOGIN_COOLOFF_MAX_SECONDS,
                                              settings.ROWBELL_LOGIN_COOLOFF_SECONDS)))


def lockout_response(request: HttpRequest, original_response: HttpResponse | None = None,
                     credentials: dict | None = None) -> HttpResponse:
    """AXES_LOCKOUT_CALLABLE: the admin's own page saying that signing in is paused and for how long,
    answered 429 with `Retry-After` in seconds (RFC 6585 section 4, RFC 9110 section 10.2.3). The lock
    restarts with each attempt, so the wait from now is the whole cool-off."""
    wait = lockout_cool_off(request)
    context = {
        **admin.site.each_context(request),
        "title": "Signing in is paused",
        "username": get_client_username(request, credentials) or "",
        "retry_in": timeuntil(timezone.now() + wait + timedelta(seconds=1)),
        "failure_limit": get_failure_limit(request, credentials),
        "longest": timeuntil(timezone.now() + timedelta(seconds=settings.ROWBELL_LOGIN_COOLOFF_MAX_SECONDS + 1)),
    }
    response = render(request, "admin/locked_out.html", context, status=429)
    response["Retry-After"] = str(max(1, math.ceil(wait.total_seconds())))
    return response
