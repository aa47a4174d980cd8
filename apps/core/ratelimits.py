"""Request counters in fixed time windows, kept in the shared cache so that every gunicorn worker on every
machine counts the same requests; and the client address they are counted by.

A rate reads like DRF's (`"1200/min"`, `"5/s"`) with an optional number of units (`"30/10m"`). Windows are
aligned on the clock (a "/min" window is one calendar minute), so a burst may reach twice the limit across a
window's edge; in exchange a counter is one integer per window and one Redis round trip per request, where
DRF's SimpleRateThrottle keeps a list of every request's time and reads then writes it (two round trips and a
value that grows with the limit).
"""

from __future__ import annotations

import ipaddress
import logging
import math
import re
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass

from django.core.cache import caches
from django.core.cache.backends.redis import RedisCache
from redis.exceptions import RedisError
from rest_framework.throttling import BaseThrottle

log = logging.getLogger(__name__)

# The cache alias the counters live in (config/settings/base.py: CACHES).
CACHE_ALIAS = "ratelimits"
_clock = time.time  # tests pin it, so that no window ends in the middle of one
# An IPv6 client is counted by its network of this size (client_ip).
IPV6_PREFIX = 64

_RATE = re.compile(r"^\s*(\d+)\s*/\s*(\d*)\s*(s|sec|second|m|min|minute|h|hour|d|day)s?\s*$", re.IGNORECASE)
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


@dataclass(frozen=True)
class Rate:
    """At most `limit` requests per window of `seconds`."""

    limit: int
    seconds: int

    @classmethod
    def parse(cls, text: str) -> Rate:
        """`"1200/min"`, `"30/10m"`, `"5/s"`, `"100/hour"`, `"1000/d"` -> Rate. Raises ValueError on anything
        else (a limit of 0 or a window of 0 is refused: switch a limit off by making it large)."""
        match = _RATE.match(text or "")
        if not match or int(match.group(1)) < 1 or match.group(2) == "0":
            raise ValueError(
                f"{text!r} is not a rate: write it as '<requests>/<unit>' or "
                f"'<requests>/<n><unit>', with a unit of s, m, h or d (e.g. '1200/min', '30/10m')."
            )
        units = int(match.group(2) or 1)
        return cls(limit=int(match.group(1)), seconds=units * _UNIT_SECONDS[match.group(3)[0].lower()])

    def describe(self) -> str:
        """'1200 per minute', '30 per 10 minutes': for error messages."""
        for unit, seconds in (("day", 86400), ("hour", 3600), ("minute", 60), ("second", 1)):
            if self.seconds % seconds == 0:
                count = self.seconds // seconds
                return f"{self.limit} per {unit}" if count == 1 else f"{self.limit} per {count} {unit}s"
        return f"{self.limit} per {self.seconds} seconds"  # pragma: no cover (every window is whole seconds)


@dataclass(frozen=True)
class Count:
    """A counter's value in its current window, and the seconds until that window ends."""

    value: int
    rate: Rate
    reset_in: float

    @property
    def over(self) -> bool:
        return self.value > self.rate.limit

    @property
    def retry_after(self) -> int:
        """Whole seconds to wait (RFC 9110 section 10.2.3 `Retry-After` takes delay-seconds), at least 1."""
        return max(1, math.ceil(self.reset_in))


def _window_key(name: str, rate: Rate, now: float) -> tuple[str, float]:
    window = int(now // rate.seconds)
    return f"rl:{name}:{rate.seconds}:{window}", (window + 1) * rate.seconds - now


def counters(*, hit: Sequence[tuple[str, Rate]] = (), peek: Sequence[tuple[str, Rate]] = ()) -> list[Count] | None:
    """Count one request on each `hit` counter and read each `peek` counter, in their current windows.

    Returns the hit counts (after this request) then the peeked ones, in order; None when the cache cannot be
    reached, so that callers let the request through (a throttle that fails closed would turn a Redis outage
    into an API outage). On Django's RedisCache this is one pipelined round trip, however many counters.
    """
    cache = caches[CACHE_ALIAS]
    now = _clock()
    hits = [(_window_key(name, rate, now), rate) for name, rate in hit]
    peeks = [(_window_key(name, rate, now), rate) for name, rate in peek]
    try:
        if isinstance(cache, RedisCache):
            values = _redis_counts(cache, hits, peeks)
        else:  # another backend (e.g. local memory in development): correct, just more round trips
            values = []
            for (key, _), rate in hits:
                cache.add(key, 0, rate.seconds + 1)
                values.append(cache.incr(key))
            values += [cache.get(key) or 0 for (key, _), _ in peeks]
    except (RedisError, OSError):
        log.warning("rate-limit counters unavailable; request let through", exc_info=True)
        return None
    return [
        Count(value=int(v or 0), rate=rate, reset_in=reset_in) for v, ((_, reset_in), rate) in zip(values, hits + peeks)
    ]


# One redis-py client per cache (over the cache's own connection pool): Django's get_client() builds a new
# one per call, which costs more than the round trip itself (redis-py sets up its reply callbacks each time).
_clients: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _client(cache: RedisCache):
    backend = cache._cache
    client = _clients.get(backend)
    if client is None:
        client = _clients[backend] = backend.get_client(write=True)
    return client


def _redis_counts(cache: RedisCache, hits, peeks) -> list:
    # One pipeline: SET NX gives a new window's counter its expiry, INCR counts (an integer is stored as is
    # by Django's RedisSerializer, so cache.get reads it back), GET peeks.
    full = [(cache.make_and_validate_key(key), rate) for (key, _), rate in hits]
    pipe = _client(cache).pipeline(transaction=False)
    for key, rate in full:
        pipe.set(key, 0, ex=rate.seconds + 1, nx=True)
        pipe.incr(key)
    for (key, _), _ in peeks:
        pipe.get(cache.make_and_validate_key(key))
    results = pipe.execute()
    return results[1 : 2 * len(full) : 2] + results[2 * len(full) :]  # the INCRs' replies, then the GETs'


def client_ip(request) -> str | None:
    """The client's address, as DRF's throttles identify it: REMOTE_ADDR, or with `ROWBELL_NUM_PROXIES` = n
    (DRF's NUM_PROXIES) the n-th address from the right of X-Forwarded-For, which the proxies in front of
    Rowbell append. Used by the API's throttles and by the admin's login lockout (AXES_CLIENT_IP_CALLABLE).

    An IPv6 client is one /64 network, answered as its first address (`2001:db8:1:2::`): a single site or
    subscriber is normally given a whole /64 (RFC 6177 section 2, RFC 7934 section 6) and can use any of its
    2^64 addresses, so counting full addresses would give it unlimited tries. An IPv4-mapped IPv6 address
    (`::ffff:192.0.2.1`, RFC 4291 section 2.5.5.2) is its IPv4 address. Anything that does not parse is
    answered as it came. None when the request has no address (a request built in code, e.g. by the test
    client's force_login)."""
    ident = BaseThrottle().get_ident(request) or None
    if ident is None or ":" not in ident:
        return ident
    try:
        address = ipaddress.IPv6Address(ident.strip("[]"))
    except ValueError:
        return ident
    if address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(ipaddress.IPv6Network((address, IPV6_PREFIX), strict=False).network_address)
