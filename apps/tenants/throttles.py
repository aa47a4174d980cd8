"""The API's throttles: 429 Too Many Requests (RFC 6585 section 4) with `Retry-After` (RFC 9110 section 10.2.3).

- Each principal (a product, an organization, a platform key) may make `ROWBELL_API_RATE` calls, and
  `ROWBELL_TRIGGER_RATE` trigger calls on a budget of their own (the trigger call is the hot path: a product
  sending a thousand notifications a second must not spend its budget for reading runs or managing keys); all
  keys of a product (e.g. the old and the new one during a rotation's grace) share its budgets.
- Failed authentications are counted per client address (`ROWBELL_AUTH_FAILURES_PER_IP`; an IPv6 client per
  /64, apps/core/ratelimits.py: client_ip) and per key prefix (`ROWBELL_AUTH_FAILURES_PER_PREFIX`), known or
  not, so that the count says nothing about which prefixes exist. Past either limit, a failed authentication
  answers 429 instead of 401. A call with a valid key is never refused by these counters: a fleet still
  sending an old key after a rotation, or a guesser behind the same NAT or proxy, would otherwise lock out
  every working key behind that address. Telling a guesser that a guess was right costs nothing here: a
  secret has 256 bits, so at the limit's pace no guess is ever right. Likewise, anyone who has seen a key's
  prefix cannot lock its owner out.

Counters live in the shared cache (apps/core/ratelimits.py): an authenticated call costs one Redis round trip,
a failed one another.
"""

from __future__ import annotations

import functools
import hashlib

from django.conf import settings
from rest_framework.throttling import BaseThrottle

from apps.core.exceptions import TooManyRequests
from apps.core.ratelimits import Count, Rate, client_ip, counters

from .principals import Tenant


@functools.lru_cache(maxsize=32)
def _rate(text: str) -> Rate:
    return Rate.parse(text)


def _ip_failures_counter(request) -> tuple[str, Rate]:
    return f"authfail:ip:{client_ip(request) or 'unknown'}", _rate(settings.ROWBELL_AUTH_FAILURES_PER_IP)


def _address_blocked(count: Count) -> TooManyRequests:
    return TooManyRequests(
        f"Too many failed authentications from your address (at most {count.rate.describe()}). Check the key "
        f"you send as 'Authorization: Api-Key <key>' (a key is shown once, when it is created or rotated), "
        f"then try again in {count.retry_after} seconds.",
        wait=count.retry_after,
        field="Authorization",
    )


def auth_failure_record(request, prefix: str | None) -> TooManyRequests | None:
    """Count a failed authentication against the client's address and, when the header had one, the key
    prefix. Returns the 429 to answer instead of a 401 when either is now over its limit, else None."""
    hit = [_ip_failures_counter(request)]
    if prefix is not None:
        # Hashed: the prefix is whatever the client sent, of any length and any characters.
        digest = hashlib.blake2b(prefix.encode(), digest_size=16).hexdigest()
        hit.append((f"authfail:prefix:{digest}", _rate(settings.ROWBELL_AUTH_FAILURES_PER_PREFIX)))
    found = counters(hit=hit)
    if not found:
        return None
    by_ip, *by_prefix = found
    if by_ip.over:
        return _address_blocked(by_ip)
    if by_prefix and by_prefix[0].over:
        count = by_prefix[0]
        return TooManyRequests(
            f"Too many failed authentications with this key (at most {count.rate.describe()}). Check the "
            f"key's secret, then try again in {count.retry_after} seconds.",
            wait=count.retry_after,
            field="Authorization",
        )
    return None


def principal_ident(tenant: Tenant) -> str:
    """Whose budget a call spends: its organization, else its product, else (platform keys) the key."""
    if tenant.organization_id:
        return f"org:{tenant.organization_id}"
    if tenant.product_id:
        return f"product:{tenant.product_id}"
    return f"key:{tenant.key_id or tenant.key_prefix}"


class PrincipalRateThrottle(BaseThrottle):
    """DRF throttle for every API view (REST_FRAMEWORK's DEFAULT_THROTTLE_CLASSES): counts the call against
    its principal's `ROWBELL_API_RATE` and raises TooManyRequests (429) past it.

    Only authenticated calls are counted: a failed authentication has already been counted, per address and
    per prefix, by the authentication class (auth_failure_record). The rate is read from settings on each
    call (DRF's own throttles read theirs once, at import).
    """

    counter = "api"
    setting = "ROWBELL_API_RATE"
    calls = "calls"

    def allow_request(self, request, view) -> bool:
        tenant = request.user
        if not isinstance(tenant, Tenant):
            return True
        found = counters(hit=[(f"{self.counter}:{principal_ident(tenant)}", _rate(getattr(settings, self.setting)))])
        if found and found[0].over:
            count = found[0]
            raise TooManyRequests(
                f"Too many {self.calls} for this {tenant.scope} (at most {count.rate.describe()}, {self.setting}). "
                f"Slow down and try again in {count.retry_after} seconds.",
                wait=count.retry_after,
            )
        return True


class TriggerRateThrottle(PrincipalRateThrottle):
    """The trigger call's throttle (TriggerApi): `ROWBELL_TRIGGER_RATE` per principal, on a counter of its own,
    so that triggering does not spend the budget of the rest of the API, nor the reverse."""

    counter = "trigger"
    setting = "ROWBELL_TRIGGER_RATE"
    calls = "trigger calls"
