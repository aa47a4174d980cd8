"""Admin login lockout with back-off, on django-axes (its settings: config/settings/base.py).

A username signing in from one address (an IPv6 client: its /64, apps/core/ratelimits.py: client_ip) is
locked out after AXES_FAILURE_LIMIT failures, for ROWBELL_LOGIN_COOLOFF_SECONDS; every further failure while
locked (axes counts them and restarts the lock) doubles the wait, up to ROWBELL_LOGIN_COOLOFF_MAX_SECONDS.
A username is also locked out from every address once it has ROWBELL_LOGIN_FAILURE_LIMIT_PER_USERNAME failures
from all addresses together within the base cool-off, so that guessing spread over many addresses is bounded
too; that limit is much higher, because anyone who knows a username can spend it. The locked-out page says
how long to wait and which lock it is.
"""

from __future__ import annotations

import math
from datetime import timedelta

from axes.helpers import get_client_username, get_failure_limit
from axes.models import AccessAttempt, AccessBase
from django.conf import settings
from django.contrib import admin
from django.db.models import Sum
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.utils.timesince import timeuntil

from apps.core.ratelimits import client_ip


def _username_failures(username: str) -> int:
    """Failures for this username from every address whose latest failure is within the base cool-off."""
    since = timezone.now() - timedelta(seconds=settings.ROWBELL_LOGIN_COOLOFF_SECONDS)
    return (
        AccessAttempt.objects.filter(username=username, attempt_time__gte=since).aggregate(
            n=Sum("failures_since_start")
        )["n"]
        or 0
    )


def _address_failures(request: HttpRequest, credentials: dict | None) -> int:
    """Failures for this request's username from its address."""
    return (
        AccessAttempt.objects.filter(
            username=get_client_username(request, credentials),
            ip_address=getattr(request, "axes_ip_address", None) or client_ip(request),
        ).aggregate(n=Sum("failures_since_start"))["n"]
        or 0
    )


def lockout_parameters(request_or_attempt: HttpRequest | AccessBase, credentials: dict | None = None) -> list:
    """AXES_LOCKOUT_PARAMETERS: which attempts a sign-in is counted with against AXES_FAILURE_LIMIT.

    Axes accepts several sets of parameters and locks out when any one set's failures reach the limit, but it
    has one limit for all of them (axes/handlers/database.py: get_failures takes the largest count). So the
    username-only set is added only once that username's failures from all addresses reach
    ROWBELL_LOGIN_FAILURE_LIMIT_PER_USERNAME: its count, then at least that high, is over AXES_FAILURE_LIMIT too.
    """
    per_address = [["username", "ip_address"]]
    if isinstance(request_or_attempt, AccessBase):
        username = request_or_attempt.username
    else:
        username = get_client_username(request_or_attempt, credentials)
    if username and _username_failures(username) >= settings.ROWBELL_LOGIN_FAILURE_LIMIT_PER_USERNAME:
        return [*per_address, ["username"]]
    return per_address


def lockout_cool_off(request: HttpRequest | None) -> timedelta:
    """AXES_COOLOFF_TIME: how long the lock of this request's username and address lasts after its latest
    failure. The base cool-off, doubled for every failure past the limit, capped at the maximum.

    Axes asks with a request (or none, from its management commands: the base is answered).
    """
    base = timedelta(seconds=settings.ROWBELL_LOGIN_COOLOFF_SECONDS)
    if request is None:
        return base
    failures = _address_failures(request, getattr(request, "axes_credentials", None))
    beyond = max(0, failures - get_failure_limit(request, None))
    seconds = settings.ROWBELL_LOGIN_COOLOFF_SECONDS * 2 ** min(beyond, 32)
    return timedelta(
        seconds=min(seconds, max(settings.ROWBELL_LOGIN_COOLOFF_MAX_SECONDS, settings.ROWBELL_LOGIN_COOLOFF_SECONDS))
    )


def lockout_response(
    request: HttpRequest, original_response: HttpResponse | None = None, credentials: dict | None = None
) -> HttpResponse:
    """AXES_LOCKOUT_CALLABLE: the admin's own page saying that signing in is paused and for how long,
    answered 429 with `Retry-After` in seconds (RFC 6585 section 4, RFC 9110 section 10.2.3). The lock
    restarts with each attempt, so the wait from now is the whole cool-off. A lock of the username from every
    address (lockout_parameters) waits the base cool-off from a new address, since it lifts as the failures
    elsewhere age past it."""
    wait = lockout_cool_off(request)
    from_everywhere = _address_failures(request, credentials) < get_failure_limit(request, credentials)
    context = {
        **admin.site.each_context(request),
        "title": "Signing in is paused",
        "username": get_client_username(request, credentials) or "",
        "retry_in": timeuntil(timezone.now() + wait + timedelta(seconds=1)),
        "failure_limit": get_failure_limit(request, credentials),
        "from_everywhere": from_everywhere,
        "username_limit": settings.ROWBELL_LOGIN_FAILURE_LIMIT_PER_USERNAME,
        "longest": timeuntil(timezone.now() + timedelta(seconds=settings.ROWBELL_LOGIN_COOLOFF_MAX_SECONDS + 1)),
    }
    response = render(request, "admin/locked_out.html", context, status=429)
    response["Retry-After"] = str(max(1, math.ceil(wait.total_seconds())))
    return response
