"""The one place where Rowbell makes outbound HTTP requests.

- One event loop per process, in a thread of its own, sends every request of a batch concurrently over
  pooled keep-alive connections (aiohttp). At most ROWBELL_DELIVERY_CONCURRENCY requests are in flight
  to one host at a time; no redirects are followed and nothing is retried here: retrying is the
  delivery engine's job, where each try is recorded.
- Destinations are checked on the address actually connected to: host names are resolved by a
  resolver that drops private, loopback, link-local, CGNAT and other special addresses (unless
  ROWBELL_OUTBOUND_ALLOW opens them), and the connection is made to the addresses it returned. A DNS
  answer that changes between a check and the connect (rebinding) cannot slip through. A literal
  address in the URL is checked before every request.
- Timeouts: ROWBELL_HTTP_CONNECT_TIMEOUT to connect, ROWBELL_HTTP_TIMEOUT for the whole request, from
  the moment it may start; a response body is read up to MAX_BODY_BYTES or that deadline, whichever
  comes first.
"""

from __future__ import annotations

import asyncio
import atexit
import ipaddress
import os
import socket
import threading
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from urllib.parse import urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver
from aiohttp.resolver import ThreadedResolver
from django.conf import settings
from django.utils import timezone

from apps.core.addresses import address_allowed as address_allowed_in
from apps.core.addresses import networks
from apps.core.masking import url_mask

EXCERPT_CHARS = 1024
USER_AGENT = "Rowbell-Webhooks/1"
# The most of a response body Rowbell reads; the rest is not waited for.
MAX_BODY_BYTES = 4096

_BLOCKED_NETWORKS = networks(*(
        "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12",
        "192.0.0.0/24", "192.0.2.0/24", "192.168.0.0/16", "198.18.0.0/15", "198.51.100.0/24",
        "203.0.113.0/24", "224.0.0.0/4", "240.0.0.0/4", "255.255.255.255/32",
        "::/128", "::1/128", "::ffff:0:0/96", "64:ff9b::/96", "64:ff9b:1::/48", "100::/64",
        "2001:db8::/32", "fc00::/7", "fe80::/10", "ff00::/8",
))


class OutboundError(Exception):
    """A request that produced no HTTP answer. `permanent` failures will not succeed on retry."""

    def __init__(self, message: str, *, permanent: bool = False):
        super().__init__(message)
        self.message = message
        self.permanent = permanent


class DestinationRefused(OutboundError):
    def __init__(self, message: str):
        super().__init__(message, permanent=True)


def address_allowed(ip: str) -> bool:
    return address_allowed_in(ip, refused=_BLOCKED_NETWORKS, allowed=settings.ROWBELL_OUTBOUND_ALLOW)


def _url_masked_in(message: str, url: str) -> str:
    """An error message (it is stored on attempts and shown by the API) with the URL it may quote
    replaced by its masked form: a URL can carry a token (aiohttp's InvalidURL quotes it whole)."""
    parts = urlsplit(url)
    masked = url_mask(url)
    message = message.replace(url, masked)
    tail = parts.path + (f"?{parts.query}" if parts.query else "")
    return message.replace(tail, "/…") if len(tail) > 1 else message


def url_check(url: str) -> None:
    """Save-time check: scheme, host, and a literal IP host's range. Raises DestinationRefused."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise DestinationRefused("Only http and https URLs are allowed.")
    if not parts.hostname:
        raise DestinationRefused("The URL has no host.")
    try:
        parts.port
    except ValueError as exc:
        raise DestinationRefused("The URL's port is not valid.") from exc
    try:
        ipaddress.ip_address(parts.hostname)
    except ValueError:
        # Legacy numeric forms (2130706433, 127.1, 0177.0.0.1) are addresses to the system's resolver.
        if all(c.isdigit() or c in ".x" for c in parts.hostname.lower()):
            raise DestinationRefused("Write an IP address in its usual form (e.g. 203.0.113.7).") from None
        return  # a name: checked on every connect, on the address it resolves to
    if not address_allowed(parts.hostname):
        raise DestinationRefused(f"The address {parts.hostname} is private or reserved.")


class _GuardedResolver(AbstractResolver):
    """Resolves a host name and keeps only the addresses that may be connected to."""

    def __init__(self):
        self._resolver = ThreadedResolver()

    async def resolve(self, host: str, port: int = 0, family: int = socket.AF_INET):
        try:
            found = await self._resolver.resolve(host, port, family)
        except OSError as exc:
            raise OutboundError(f"Cannot resolve {host}: {exc.strerror or exc}") from exc
        allowed = [entry for entry in found if address_allowed(entry["host"])]
        if not allowed:
            raise DestinationRefused(f"{host} resolves to a private or reserved address ({found[0]['host']}).")
        return allowed

    async def close(self) -> None:
        await self._resolver.close()


@dataclass
class HttpAnswer:
    status: int
    headers: dict[str, str]
    excerpt: str  # what attempts record: the first EXCERPT_CHARS characters
    duration_ms: int
    body: bytes = b""  # the body as read (at most MAX_BODY_BYTES), for callers that parse it

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


@dataclass
class Post:
    url: str
    body: bytes
    headers: dict[str, str]


class _Sender:
    """The process's event loop thread and its client session. A forked child makes its own."""

    def __init__(self):
        self.pid = os.getpid()
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, name="rowbell-outbound", daemon=True).start()
        self.session: aiohttp.ClientSession = self._run(self._session())
        self.gates: dict[tuple, asyncio.Semaphore] = {}
        atexit.register(self.close)

    def close(self) -> None:
        if self.pid == os.getpid() and not self.session.closed:
            self._run(self.session.close())

    def _run(self, coroutine):
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result()

    async def _session(self) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(
            resolver=_GuardedResolver(), use_dns_cache=False, limit=0,
            limit_per_host=settings.ROWBELL_DELIVERY_CONCURRENCY, keepalive_timeout=30)
        return aiohttp.ClientSession(connector=connector, auto_decompress=False, headers={"User-Agent": USER_AGENT},
                                     timeout=aiohttp.ClientTimeout(total=None), cookie_jar=aiohttp.DummyCookieJar())

    def post_many(self, posts: list[Post]) -> list[HttpAnswer | OutboundError]:
        return self._run(self._post_all(posts))

    async def _post_all(self, posts):
        return await asyncio.gather(*(self._post_safely(p) for p in posts))

    async def _post_safely(self, post: Post) -> HttpAnswer | OutboundError:
        # _post answers every failure it knows; anything else is a bug, recorded against that request only
        # (the batch's other requests, already on their way, keep their own outcomes).
        try:
            answer = await self._post(post)
        except Exception as exc:  # noqa: BLE001
            answer = OutboundError(f"Internal error: {exc.__class__.__name__}: {exc}")
        if isinstance(answer, OutboundError):
            answer.message = _url_masked_in(answer.message, post.url)
            answer.args = (answer.message,)
        return answer

    def _gate(self, url: str) -> asyncio.Semaphore:
        parts = urlsplit(url)
        key = (parts.scheme, parts.hostname, parts.port)
        gate = self.gates.get(key)
        if gate is None:
            gate = self.gates[key] = asyncio.Semaphore(settings.ROWBELL_DELIVERY_CONCURRENCY)
        return gate

    async def _post(self, post: Post) -> HttpAnswer | OutboundError:
        try:
            url_check(post.url)
        except OutboundError as exc:
            return exc
        except ValueError as exc:  # e.g. a port out of range
            return OutboundError(f"The URL is not valid: {exc}", permanent=True)
        total = settings.ROWBELL_HTTP_TIMEOUT
        async with self._gate(post.url):  # the request's time starts once it may be sent
            started = time.monotonic()
            deadline = self.loop.time() + total
            try:
                async with asyncio.timeout_at(deadline):
                    response = await self.session.post(
                        post.url, data=post.body, headers=post.headers, allow_redirects=False,
                        timeout=aiohttp.ClientTimeout(total=None, sock_connect=settings.ROWBELL_HTTP_CONNECT_TIMEOUT))
            except OutboundError as exc:
                return exc
            except TimeoutError:
                return OutboundError(f"No answer within {total:g}s.")
            except (aiohttp.ClientError, OSError, ValueError) as exc:
                return OutboundError(f"Request failed: {exc.__class__.__name__}: {exc}")
            raw = await _read_bounded(response, deadline)
            return HttpAnswer(status=response.status, headers={k.lower(): v for k, v in response.headers.items()},
                              excerpt=raw.decode("utf-8", errors="replace")[:EXCERPT_CHARS],
                              duration_ms=int((time.monotonic() - started) * 1000), body=raw)


async def _read_bounded(response: aiohttp.ClientResponse, deadline: float) -> bytes:
    """Read at most MAX_BODY_BYTES of the body, until the request's deadline.

    A receiver that sends an endless or trickling body cannot hold a worker: the connection is closed
    (not returned to the pool) whenever the body was not read to its end.
    """
    chunks, size, complete = [], 0, False
    try:
        async with asyncio.timeout_at(deadline):
            while size < MAX_BODY_BYTES:
                chunk = await response.content.readany()
                if not chunk:
                    complete = True
                    break
                chunks.append(chunk)
                size += len(chunk)
    except (TimeoutError, aiohttp.ClientError, OSError):
        pass
    if complete:
        response.release()
    else:
        response.close()
    return b"".join(chunks)[:MAX_BODY_BYTES]


_sender: _Sender | None = None
_sender_lock = threading.Lock()


def _sender_get() -> _Sender:
    global _sender
    with _sender_lock:
        if _sender is None or _sender.pid != os.getpid():
            _sender = _Sender()
        return _sender


def post_many(posts: list[Post]) -> list[HttpAnswer | OutboundError]:
    """Send every POST concurrently; each answer (whatever its status) or the error that stopped it, in
    order. Never raises for one request's failure."""
    if not posts:
        return []
    return _sender_get().post_many(posts)


def post(url: str, body: bytes, headers: dict[str, str]) -> HttpAnswer:
    """POST `body` to `url`; returns the answer whatever its status, raises OutboundError if none came."""
    answer = post_many([Post(url, body, headers)])[0]
    if isinstance(answer, OutboundError):
        raise answer
    return answer


def retry_after_seconds(value: str | None) -> float | None:
    """Parse a Retry-After header: delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - timezone.now()).total_seconds())
