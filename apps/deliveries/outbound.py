"""The one place where Rowbell makes outbound HTTP requests.

- Pooled keep-alive connections (urllib3, thread-safe), no redirects followed, no automatic retries:
  retrying is the delivery engine's job, where each try is recorded.
- Destinations are checked on the address actually connected to: the host is resolved once, each
  resolved address is checked against private, loopback, link-local, CGNAT and other special ranges
  (unless ROWBELL_OUTBOUND_ALLOW opens them), and the socket connects to that checked address. A DNS
  answer that changes between a check and the connect (rebinding) cannot slip through.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from urllib.parse import urlsplit

import urllib3
from django.conf import settings
from django.utils import timezone
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.util.connection import create_connection

from apps.core.addresses import address_allowed as address_allowed_in
from apps.core.addresses import networks

EXCERPT_CHARS = 1024
USER_AGENT = "Rowbell-Webhooks/1"

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


def url_check(url: str) -> None:
    """Save-time check: scheme, host, and a literal IP host's range. Raises DestinationRefused."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise DestinationRefused("Only http and https URLs are allowed.")
    if not parts.hostname:
        raise DestinationRefused("The URL has no host.")
    try:
        ipaddress.ip_address(parts.hostname)
    except ValueError:
        return  # a name: checked on every connect, on the address it resolves to
    if not address_allowed(parts.hostname):
        raise DestinationRefused(f"The address {parts.hostname} is private or reserved.")


def _guarded_connect(host: str, port: int, timeout, source_address, socket_options):
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise OutboundError(f"Cannot resolve {host}: {exc.strerror}") from exc
    addresses = [info[4][0] for info in infos]
    allowed = [a for a in addresses if address_allowed(a)]
    if not allowed:
        raise DestinationRefused(f"{host} resolves to a private or reserved address ({addresses[0]}).")
    last_exc: OSError | None = None
    for address in allowed:
        try:
            return create_connection((address, port), timeout, source_address, socket_options)
        except OSError as exc:
            last_exc = exc
    if isinstance(last_exc, TimeoutError):
        raise OutboundError(f"Connecting to {host}:{port} timed out.")
    raise OutboundError(f"Cannot connect to {host}:{port}: {last_exc}")


class GuardedHTTPConnection(HTTPConnection):
    def _new_conn(self):
        return _guarded_connect(self._dns_host, self.port, self.timeout, self.source_address, self.socket_options)


class GuardedHTTPSConnection(HTTPSConnection):
    # TLS still verifies the certificate against the host name; only the TCP address is pinned.
    def _new_conn(self):
        return _guarded_connect(self._dns_host, self.port, self.timeout, self.source_address, self.socket_options)


class _GuardedHTTPPool(HTTPConnectionPool):
    ConnectionCls = GuardedHTTPConnection


class _GuardedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = GuardedHTTPSConnection


@dataclass
class HttpAnswer:
    status: int
    headers: dict[str, str]
    excerpt: str
    duration_ms: int

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


_pool: urllib3.PoolManager | None = None


def _pool_manager() -> urllib3.PoolManager:
    global _pool
    if _pool is None:
        manager = urllib3.PoolManager(
            num_pools=200,
            maxsize=settings.ROWBELL_DELIVERY_CONCURRENCY,
            block=False,
            retries=False,
            headers={"User-Agent": USER_AGENT},
        )
        manager.pool_classes_by_scheme = {"http": _GuardedHTTPPool, "https": _GuardedHTTPSPool}
        _pool = manager
    return _pool



def post(url: str, body: bytes, headers: dict[str, str]) -> HttpAnswer:
    """POST `body` to `url`; returns the answer whatever its status, raises OutboundError if none came."""
    url_check(url)
    timeout = urllib3.Timeout(connect=settings.ROWBELL_HTTP_CONNECT_TIMEOUT, read=settings.ROWBELL_HTTP_TIMEOUT,
                              total=settings.ROWBELL_HTTP_TIMEOUT)
    started = time.monotonic()
    try:
        response = _pool_manager().request(
            "POST", url, body=body, headers=headers, timeout=timeout, redirect=False, retries=False,
            preload_content=False,
        )
    except OutboundError:
        raise
    except urllib3.exceptions.TimeoutError as exc:
        raise OutboundError(f"No answer within {settings.ROWBELL_HTTP_TIMEOUT:g}s.") from exc
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        raise OutboundError(f"Request failed: {exc}") from exc
    raw = _read_bounded(response, deadline=started + settings.ROWBELL_HTTP_TIMEOUT)
    duration_ms = int((time.monotonic() - started) * 1000)
    excerpt = raw.decode("utf-8", errors="replace")[:EXCERPT_CHARS]
    return HttpAnswer(
        status=response.status,
        headers={k.lower(): v for k, v in response.headers.items()},
        excerpt=excerpt,
        duration_ms=duration_ms,
    )


# The most of a response body Rowbell reads; the rest is not waited for.
MAX_BODY_BYTES = 4096


def _read_bounded(response, *, deadline: float) -> bytes:
    """Read at most MAX_BODY_BYTES of the body, in small chunks, until the request's deadline.

    A receiver that sends an endless or trickling body cannot hold a worker: the connection is closed
    (not returned to the pool) whenever the body was not read to its end.
    """
    chunks, size, complete = [], 0, True
    try:
        while True:
            # read1: whatever has arrived (one receive at most), so the deadline is checked often.
            chunk = response.read1(1024, decode_content=False)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
            if size >= MAX_BODY_BYTES or time.monotonic() > deadline:
                complete = False
                break
    except (urllib3.exceptions.HTTPError, OSError):
        complete = False
    finally:
        if not complete:
            response.close()
        response.release_conn()
    return b"".join(chunks)[:MAX_BODY_BYTES]


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
