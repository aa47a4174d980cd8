"""The one place where Rowbell makes outbound HTTP requests.

- One event loop per process, in a thread of its own, sends every request of a batch concurrently over
  pooled keep-alive connections (aiohttp). At most ROWBELL_DELIVERY_CONCURRENCY requests are in flight
  to one host at a time; no redirects are followed and nothing is retried here: retrying is the
  delivery engine's job, where each try is recorded.
- Destinations are checked on the address actually connected to (apps.core.destinations): host names
  are resolved by a resolver that drops private, loopback, link-local, CGNAT and other special
  addresses (unless ROWBELL_OUTBOUND_ALLOW opens them), and the connection is made to the addresses it
  returned. A DNS answer that changes between a check and the connect (rebinding) cannot slip through.
  aiohttp connects to an IP literal without asking the resolver, so before every request the URL is
  parsed as aiohttp parses it (yarl: IDNA/UTS #46, so `127。0。0。1` is 127.0.0.1) and a literal host is
  judged in that form; the parsed URL is the one sent.
- Answers are echoed only from public addresses. From a refused destination there is no answer: the
  request is never made. From an internal address (private, loopback... reached only because
  ROWBELL_OUTBOUND_ALLOW opens it) the answer's text is withheld from what attempts record and errors
  say, so that a tenant cannot read an internal service through Rowbell, unless
  ROWBELL_OUTBOUND_SHOW_INTERNAL_ANSWERS says the operator's internal receivers may be shown (local and
  test settings, where loopback receivers stand in for real ones). The body stays available to the
  code that parses it (a token endpoint's grant), never to tenants.
- Timeouts: ROWBELL_HTTP_CONNECT_TIMEOUT to connect, ROWBELL_HTTP_TIMEOUT for the whole request, from
  the moment it may start; a response body is read up to MAX_BODY_BYTES or that deadline, whichever
  comes first.
"""

from __future__ import annotations

import asyncio
import atexit
import os
import socket
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from urllib.parse import urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver
from aiohttp.resolver import ThreadedResolver
from django.conf import settings
from django.utils import timezone
from django.utils.http import parse_http_date
from yarl import URL

from apps.core import destinations
from apps.core.masking import url_mask

EXCERPT_CHARS = 1024
USER_AGENT = "Rowbell-Webhooks/1"
# The most of a response body Rowbell reads; the rest is not waited for.
MAX_BODY_BYTES = 4096

# What attempts record, and errors quote, instead of an internal destination's answer.
WITHHELD = "(The answer came from an internal address; its text is not shown.)"


class OutboundError(Exception):
    """A request that produced no HTTP answer. `permanent` failures will not succeed on retry."""

    def __init__(self, message: str, *, permanent: bool = False):
        super().__init__(message)
        self.message = message
        self.permanent = permanent


class DestinationRefused(OutboundError):
    """A destination Rowbell does not connect to (always permanent); the message says what to do."""

    def __init__(self, message: str):
        super().__init__(message, permanent=True)


def url_check(url: str) -> URL:
    """The check of an outbound URL, at save time and before each request: scheme, host, port, and an IP
    literal host in any spelling, read as aiohttp reads it (destinations.url_check). Returns the parsed
    URL to send; raises DestinationRefused."""
    try:
        return destinations.url_check(url, policy=destinations.OUTBOUND)
    except destinations.DestinationRefused as exc:
        raise DestinationRefused(exc.message) from None


def _url_masked_in(message: str, url: str) -> str:
    """An error message (it is stored on attempts and shown by the API) with the URL it may quote
    replaced by its masked form: a URL can carry a token (aiohttp's InvalidURL quotes it whole)."""
    parts = urlsplit(url)
    masked = url_mask(url)
    message = message.replace(url, masked)
    tail = parts.path + (f"?{parts.query}" if parts.query else "")
    return message.replace(tail, "/…") if len(tail) > 1 else message


def answers_shown(internal: bool) -> bool:
    """Whether an answer's text may be recorded and quoted: always from a public address, from an
    internal one only if ROWBELL_OUTBOUND_SHOW_INTERNAL_ANSWERS says so."""
    return not internal or settings.ROWBELL_OUTBOUND_SHOW_INTERNAL_ANSWERS


class _GuardedResolver(AbstractResolver):
    """Resolves a host name and keeps only the addresses that may be connected to.

    Remembers the names that resolved to an internal address (one opened by ROWBELL_OUTBOUND_ALLOW):
    a pooled connection may outlive the answer that opened it, so a name once internal stays so for
    this process, and its answers are treated as internal ones.
    """

    def __init__(self) -> None:
        self._resolver = ThreadedResolver()
        self.internal_hosts: set[str] = set()

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET):
        try:
            found = await self._resolver.resolve(host, port, family)
        except OSError as exc:
            raise OutboundError(f"Cannot resolve {host}: {exc.strerror or exc}") from exc
        try:
            allowed = destinations.resolved_check(
                host, [entry["host"] for entry in found], policy=destinations.OUTBOUND
            )
        except destinations.DestinationRefused as exc:
            raise DestinationRefused(exc.message) from None
        if any(destinations.OUTBOUND.internal(a) for a in allowed):
            self.internal_hosts.add(host)
        return [entry for entry in found if entry["host"] in allowed]

    async def close(self) -> None:
        await self._resolver.close()


@dataclass
class HttpAnswer:
    status: int
    headers: dict[str, str]
    excerpt: str  # what attempts record: the first EXCERPT_CHARS characters, or WITHHELD
    duration_ms: int
    body: bytes = b""  # the body as read (at most MAX_BODY_BYTES), for callers that parse it, never to show
    shown: bool = True  # False for an internal destination's answer: its text and headers are not quoted

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


@dataclass
class Post:
    url: str
    body: bytes
    headers: dict[str, str]


class _Sender:
    """The process's event loop thread and its client session. A forked child makes its own."""

    def __init__(self) -> None:
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
        self.resolver = _GuardedResolver()
        connector = aiohttp.TCPConnector(
            resolver=self.resolver,
            use_dns_cache=False,
            limit=0,
            limit_per_host=settings.ROWBELL_DELIVERY_CONCURRENCY,
            keepalive_timeout=30,
        )
        return aiohttp.ClientSession(
            connector=connector,
            auto_decompress=False,
            headers={"User-Agent": USER_AGENT},
            timeout=aiohttp.ClientTimeout(total=None),
            cookie_jar=aiohttp.DummyCookieJar(),
        )

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

    def _gate(self, url: URL) -> asyncio.Semaphore:
        key = (url.scheme, url.raw_host, url.port)
        gate = self.gates.get(key)
        if gate is None:
            gate = self.gates[key] = asyncio.Semaphore(settings.ROWBELL_DELIVERY_CONCURRENCY)
        return gate

    def _internal(self, url: URL) -> bool:
        assert url.raw_host is not None  # url_check refused a URL without a host
        literal = destinations.host_literal(url.raw_host)
        if literal is not None:
            return destinations.OUTBOUND.internal(literal)
        return url.raw_host in self.resolver.internal_hosts

    async def _post(self, post: Post) -> HttpAnswer | OutboundError:
        try:
            # The URL as aiohttp will read it: the same object is sent, so the host judged is the host used.
            url = url_check(post.url)
        except OutboundError as exc:
            return exc
        total = settings.ROWBELL_HTTP_TIMEOUT
        async with self._gate(url):  # the request's time starts once it may be sent
            started = time.monotonic()
            deadline = self.loop.time() + total
            try:
                async with asyncio.timeout_at(deadline):
                    response = await self.session.post(
                        url,
                        data=post.body,
                        headers=post.headers,
                        allow_redirects=False,
                        timeout=aiohttp.ClientTimeout(total=None, sock_connect=settings.ROWBELL_HTTP_CONNECT_TIMEOUT),
                    )
            except OutboundError as exc:
                return exc
            except TimeoutError:
                return OutboundError(f"No answer within {total:g}s.")
            except (aiohttp.ClientError, OSError, ValueError) as exc:
                return OutboundError(f"Request failed: {exc.__class__.__name__}: {exc}")
            raw = await _read_bounded(response, deadline)
            shown = answers_shown(self._internal(url))
            return HttpAnswer(
                status=response.status,
                headers={k.lower(): v for k, v in response.headers.items()},
                excerpt=raw.decode("utf-8", errors="replace")[:EXCERPT_CHARS] if shown else WITHHELD,
                duration_ms=int((time.monotonic() - started) * 1000),
                body=raw,
                shown=shown,
            )


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
    """Seconds a `Retry-After` header asks to wait (RFC 9110 section 10.2.3): delta-seconds, or an HTTP-date in
    any of its three forms (IMF-fixdate, RFC 850, asctime; django.utils.http.parse_http_date), or a date with a
    numeric zone as some servers send (`-0000`; email.utils, a date without a zone read as GMT as HTTP-dates
    are). A date in the past is 0; None when absent or unreadable. Never raises."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        when = datetime.fromtimestamp(parse_http_date(value), tz=UTC)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
    except OverflowError:
        return None
    return max(0.0, (when - timezone.now()).total_seconds())
