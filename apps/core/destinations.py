"""Where Rowbell may connect: every destination a tenant chooses, read the way the connecting client reads it.

Tenants choose destinations: webhook endpoint URLs, a recipient's `chat_webhook`, chat and gateway
provider URLs, an SMTP host, a customer database host. Each goes through this module when it is saved
and again before every connect, so that the host judged is the host the client connects to:

- A URL is parsed by yarl, as aiohttp parses it, so its host is the one aiohttp uses: lower case,
  IDNA-encoded with the UTS #46 mapping (`idna.encode(..., uts46=True)`), which turns full stops such as
  U+3002, U+FF0E and U+FF61 into "." and full-width digits into ASCII ones. `http://127。0。0。1/` is the
  IP literal 127.0.0.1 to aiohttp, which connects to a literal without asking any resolver: the literal
  must be judged here, before the request, as aiohttp reads it.
- A bare host (SMTP, PostgreSQL) goes through Python's socket layer, which encodes a str host with the
  IDNA 2003 codec before getaddrinfo; glibc then takes every inet_aton spelling of IPv4 (`127.1`,
  `0x7f.1`, `017700000001`, `2130706433`). Both the UTS #46 and the IDNA 2003 readings are judged.
- A trailing dot (the root, RFC 1034 section 3.1) does not turn an IP literal into a name: `127.0.0.1.`
  is judged as 127.0.0.1 (host_literal). A URL host that aiohttp takes for a literal but that is none
  (`999.1`, `1..2`) is refused, as aiohttp would resolve it without the checked resolver.
- An IP literal, in whatever spelling, is judged by addresses.address_allowed, which reads IPv6 forms
  that carry an IPv4 address by that IPv4 address. A host name is resolved on connect and each address
  it resolves to is judged the same way (resolved_check); the connection goes to a judged address.

Two policies: OUTBOUND (HTTP and SMTP; public addresses only, ROWBELL_OUTBOUND_ALLOW opens networks) and
CONNECTION (customer databases; private networks allowed, ROWBELL_CONNECTION_ALLOW opens loopback and
the like). Refusals raise DestinationRefused with a message that says what to do; callers name the field.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

import idna
from django.conf import settings
from yarl import URL

from .addresses import (
    CONNECTION_REFUSED_ENTRIES,
    OUTBOUND_REFUSED_ENTRIES,
    IPAddress,
    address_allowed,
    address_internal,
    address_kind,
    judged_addresses,
    networks,
)


class DestinationRefused(Exception):
    """A destination Rowbell will not connect to; `message` says why and what to do."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class Policy:
    """Which addresses one kind of destination may reach: `refused` networks (and with `global_only` any
    address `ipaddress` does not call global), unless the networks named in the `setting` (a list of
    "10.0.0.0/8"-style entries) open them. `refused_words` describe the refused ranges in messages."""

    setting: str
    refused: tuple
    refused_words: str
    global_only: bool = False

    def allows(self, ip: str | IPAddress) -> bool:
        """Whether `ip` may be connected to under this policy (raises ValueError if it is no address)."""
        return address_allowed(
            ip, refused=self.refused, allowed=tuple(getattr(settings, self.setting)), global_only=self.global_only
        )

    def internal(self, ip: str | IPAddress) -> bool:
        """Whether `ip` lies in a refused range, reachable only because the setting opened it."""
        return address_internal(ip, refused=self.refused, global_only=self.global_only)


OUTBOUND = Policy(
    "ROWBELL_OUTBOUND_ALLOW", tuple(networks(*OUTBOUND_REFUSED_ENTRIES)), "private or reserved", global_only=True
)
CONNECTION = Policy(
    "ROWBELL_CONNECTION_ALLOW", tuple(networks(*CONNECTION_REFUSED_ENTRIES)), "loopback, link-local or reserved"
)


def _ipv4_any_spelling(host: str) -> ipaddress.IPv4Address | None:
    """The IPv4 address glibc's inet_aton (and so getaddrinfo) reads in `host`: dotted quads with one
    to four parts, each decimal, octal (leading 0) or hexadecimal (0x)."""
    if not host.isascii() or not host or not host.replace(".", "").replace("x", "").replace("X", "").isalnum():
        return None
    try:
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except OSError:
        return None


def host_literal(host: str) -> IPAddress | None:
    """The IP address `host` spells, in any spelling the socket layer takes (an IPv6 address with or
    without brackets and zone, an IPv4 address in any inet_aton form), or None for a host name. `host`
    is read as it is otherwise: normalise it first (http_url_read, socket_host_readings).

    A trailing dot is read as the root of an absolute name (RFC 1034 section 3.1) and dropped, inside
    brackets too: `127.0.0.1.`, `127.1.`, `0x7f.1.`, `[::1].` and `[::1.]` are the addresses they spell
    without it. glibc's inet_aton refuses the dot and hands such a host to DNS, but another resolver, a
    proxy or a later client may not, so the address is judged whichever way it is read.
    """
    text = host.rstrip(".")
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1].rstrip(".")
    try:
        return ipaddress.ip_address(text.split("%", 1)[0] if ":" in text else text)
    except ValueError:
        return _ipv4_any_spelling(text)


def _uts46(host: str) -> str | None:
    try:
        return idna.encode(host, uts46=True).decode("ascii")
    except idna.IDNAError:
        return None


def socket_host_readings(host: str) -> list[str]:
    """The ways a client may read a bare host name: as written (lower case), UTS #46 (idna, as yarl and
    modern clients do) and IDNA 2003 (Python's `str.encode("idna")`, which socket.getaddrinfo applies to
    a str host). Distinct readings, the first the one shown in messages."""
    readings: list[str | None] = [host.lower()]
    if not host.isascii():
        readings.append(_uts46(host))
        try:
            readings.append(host.encode("idna").decode("ascii"))
        except UnicodeError:
            pass
    return list(dict.fromkeys(r for r in readings if r))


def _refusal(written: str, address: IPAddress, policy: Policy) -> DestinationRefused:
    judged = judged_addresses(address)
    refused = next((a for a in judged if not policy.allows(a)), judged[0])
    notes = [f"the address {address}"] if written != str(address) else []
    if refused != address:
        notes.append(f"which carries {refused}")
    shown = f"{written} ({', '.join(notes)})" if notes else written
    return DestinationRefused(
        f"{shown} is a {policy.refused_words} address ({address_kind(refused)}); Rowbell does not connect "
        f"there. Use a public address or host name; a development set-up can open such networks with "
        f"{policy.setting}."
    )


def literal_check(host: str, *, policy: Policy, written: str | None = None) -> IPAddress | None:
    """Judge `host` if it is an IP literal in any spelling; return the address (None for a name).
    Raises DestinationRefused if the policy refuses the address."""
    address = host_literal(host)
    if address is not None and not policy.allows(address):
        raise _refusal(written or host, address, policy)
    return address


def http_url_read(url: str) -> URL:
    """`url` parsed exactly as aiohttp will parse it (yarl), checked for a usable http(s) form. Its
    `raw_host` is the host aiohttp connects to (IDNA/UTS #46, IPv6 compressed, without brackets).
    Raises DestinationRefused if it is no http(s) URL with a host and a valid port."""
    try:
        parsed = URL(url)
        scheme, host, port = parsed.scheme, parsed.raw_host, parsed.port
    except (ValueError, TypeError, UnicodeError) as exc:
        raise DestinationRefused(f"The URL is not valid: {exc}") from None
    if scheme not in ("http", "https"):
        raise DestinationRefused("Only http and https URLs are allowed.")
    if not host:
        raise DestinationRefused("The URL has no host.")
    if port is not None and not 0 < port < 65536:
        raise DestinationRefused("The URL's port is not valid.")
    return parsed


def url_check(url: str, *, policy: Policy = OUTBOUND) -> URL:
    """Check an http(s) URL as the HTTP client will use it, when it is saved and before each request:

    1. parse it as aiohttp does (http_url_read; the host IDNA/UTS #46-encoded);
    2. if the host is an IP literal in any spelling, a trailing dot included (host_literal), judge the
       address (IPv6 forms carrying an IPv4 address by that address); an IPv4 address that is not in its
       usual dotted form, or any address with a trailing dot, is refused, as aiohttp refuses to connect
       to it or would hand it to the system resolver;
    3. a host that aiohttp takes for an IP literal (_aiohttp_literal) but that is none is refused:
       aiohttp would pass it to the system resolver, around the checked resolver (outbound.py);
    4. a host name passes here: it is judged on every connect on the addresses it resolves to.

    Returns the parsed URL (send that one). Raises DestinationRefused.
    """
    parsed = http_url_read(url)
    host = parsed.raw_host
    assert host is not None  # http_url_read refuses a URL without a host
    address = literal_check(host, policy=policy, written=_written_host(url) or host)
    if address is None:
        if _aiohttp_literal(host):
            raise DestinationRefused(f"{host} is not a valid IP address.")
    elif host.endswith(".") or (address.version == 4 and host != str(address)):
        raise DestinationRefused(f"Write the IP address {address} in its usual form (not {host}).")
    return parsed


def _aiohttp_literal(host: str) -> bool:
    """Whether aiohttp takes `host` for an IP literal and so connects to it without calling the resolver
    (aiohttp.helpers.is_ip_address: a colon, or nothing but digits and dots)."""
    return ":" in host or host.replace(".", "").isdigit()


def _written_host(url: str) -> str | None:
    """The host as the user typed it, for messages (urlsplit keeps it unnormalised)."""
    try:
        return urlsplit(url).hostname
    except ValueError:
        return None


def host_check(host: str, *, policy: Policy) -> None:
    """Check a bare host (an SMTP server, a customer database) when it is saved and before each connect:
    every reading a client may make of it (socket_host_readings) that is an IP literal in any spelling
    is judged. A host name passes here and is judged on connect by resolved_check. Raises
    DestinationRefused."""
    for reading in socket_host_readings(host.strip()):
        literal_check(reading, policy=policy, written=host)


def resolved_check(host: str, addresses: list[str], *, policy: Policy) -> list[str]:
    """The addresses `host` resolved to that the policy allows, in order. Raises DestinationRefused when
    none is allowed (naming the first), so that the connection goes only to a judged address."""
    allowed = [a for a in addresses if policy.allows(a)]
    if not allowed:
        raise DestinationRefused(
            f"{host} resolves to a {policy.refused_words} address ({addresses[0]}); Rowbell does not connect "
            f"there. Use a host name that resolves to a public address; a development set-up can open such "
            f"networks with {policy.setting}."
        )
    return allowed
