"""Whether an IP address may be connected to: one rule for outbound HTTP, SMTP and customer databases.

An IPv6 address that carries an IPv4 address is judged by the IPv4 address it carries, because that is
where its packets end up: IPv4-mapped `::ffff:a.b.c.d` and IPv4-compatible `::a.b.c.d` (RFC 4291
section 2.5.5), SIIT's IPv4-translated `::ffff:0:a.b.c.d` (RFC 6145, RFC 2765), 6to4 `2002:AABB:CCDD::/48`
(RFC 3056), NAT64's well-known prefix `64:ff9b::/96` and local-use prefix `64:ff9b:1::/48` (RFC 6052,
RFC 8215) and Teredo `2001::/32` (RFC 4380, server and client). Reading `[::127.0.0.1]` as an IPv6
address outside every refused network would otherwise reach loopback wherever the kernel or a
translator forwards it.
"""

from __future__ import annotations

import ipaddress
from functools import lru_cache

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Outbound HTTP and SMTP: only public addresses, unless ROWBELL_OUTBOUND_ALLOW opens a network. Refused:
# - the blocks the IANA IPv4 and IPv6 Special-Purpose Address Registries (RFC 6890, RFC 8190) mark not
#   globally reachable, among them 192.88.99.0/24 (6to4 relay anycast, deprecated by RFC 7526),
#   2001:2::/48 (benchmarking, RFC 5180), 2001:10::/28 (ORCHID, RFC 4843), 3fff::/20 (documentation,
#   RFC 9637), 5f00::/16 (segment routing SIDs, RFC 9602) and 100:0:0:1::/64 (dummy prefix, RFC 9780);
#   the blocks that carry an IPv4 address (::ffff:0:0/96, 64:ff9b::/96, 2002::/16, Teredo's 2001::/32)
#   are judged by the address they carry instead (embedded_ipv4);
# - 2001:20::/28 (ORCHIDv2, RFC 7343) and 2001:30::/28 (DETs, RFC 9374), which the registry calls
#   reachable but which hold identifiers, "not routable at the IP layer" (RFC 7343 section 2);
# - fec0::/10, site-local unicast (RFC 3879 deprecated it; some sites still route it) and multicast
#   (224.0.0.0/4, RFC 5771; ff00::/8, RFC 4291).
# Besides these, an address that `ipaddress` does not call global is refused too (`global_only`): a
# catch-all for a block this list misses. The list stays the reference, as the Python in use may know an
# older registry: 3.11 calls fec0::/10 and 3fff::/20 global, and the whole of 2001::/23 (RFC 2928)
# non-global, so the anycast, AMT and AS112 blocks there (2001:1::1-3, 2001:3::/32, 2001:4:112::/48) are
# refused too, which no webhook or mail server needs.
OUTBOUND_REFUSED_ENTRIES = (
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.0.0.0/24",
    "192.0.2.0/24",
    "192.88.99.0/24",
    "192.168.0.0/16",
    "198.18.0.0/15",
    "198.51.100.0/24",
    "203.0.113.0/24",
    "224.0.0.0/4",
    "240.0.0.0/4",
    "255.255.255.255/32",
    "::/128",
    "::1/128",
    "100::/64",
    "100:0:0:1::/64",
    "2001:2::/48",
    "2001:10::/28",
    "2001:20::/28",
    "2001:30::/28",
    "2001:db8::/32",
    "3fff::/20",
    "5f00::/16",
    "fc00::/7",
    "fe80::/10",
    "fec0::/10",
    "ff00::/8",
)
# Customer databases: private networks are allowed (a self-hosted Rowbell usually reaches its customers'
# databases there); loopback, link-local and reserved addresses unless ROWBELL_CONNECTION_ALLOW opens them.
CONNECTION_REFUSED_ENTRIES = (
    "0.0.0.0/8",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "224.0.0.0/4",
    "240.0.0.0/4",
    "255.255.255.255/32",
    "::/128",
    "::1/128",
    "fe80::/10",
    "ff00::/8",
)

_COMPATIBLE = ipaddress.IPv6Network("::/96")
_SIIT = ipaddress.IPv6Network("::ffff:0:0:0/96")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.IPv6Network("64:ff9b:1::/48")
_LOOPBACK_OR_UNSPECIFIED = ipaddress.IPv6Network("::/127")


def networks(*entries: str) -> list:
    """`ipaddress` networks for entries such as "10.0.0.0/8" or "::1" (host bits allowed)."""
    return [ipaddress.ip_network(e, strict=False) for e in entries]


@lru_cache(maxsize=16)
def _networks(entries: tuple[str, ...]):
    return tuple(networks(*entries))


def _rfc6052_ipv4(value: int, prefix_length: int) -> ipaddress.IPv4Address:
    """The IPv4 address RFC 6052 (section 2.2) places after an IPv6 prefix of `prefix_length` bits:
    the 32 bits that follow the prefix, skipping bits 64 to 71 (the "u" octet, always zero)."""
    bits = f"{value:0128b}"
    without_u = bits[:64] + bits[72:]
    start = prefix_length if prefix_length < 64 else prefix_length - 8
    return ipaddress.IPv4Address(int(without_u[start : start + 32], 2))


def embedded_ipv4(address: IPAddress) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address carries (see the module's docstring for the forms), or [].

    `::` and `::1` are the unspecified and loopback addresses (RFC 4291 section 2.5.2-2.5.3), not
    IPv4-compatible ones. In the local-use NAT64 prefix the network chooses the prefix length (48 to 96
    bits), so every reading RFC 6052 allows there is returned, and all of them must pass.
    """
    if address.version != 6:
        return []
    value = int(address)
    if address.ipv4_mapped is not None:
        return [address.ipv4_mapped]
    if address in _SIIT:
        return [ipaddress.IPv4Address(value & 0xFFFFFFFF)]
    if address in _COMPATIBLE and address not in _LOOPBACK_OR_UNSPECIFIED:
        return [ipaddress.IPv4Address(value & 0xFFFFFFFF)]
    if address.sixtofour is not None:
        return [address.sixtofour]
    if address in _NAT64:
        return [ipaddress.IPv4Address(value & 0xFFFFFFFF)]
    if address in _NAT64_LOCAL:
        return list(dict.fromkeys(_rfc6052_ipv4(value, length) for length in (48, 56, 64, 96)))
    if address.teredo is not None:
        server, client = address.teredo
        return [server, client]
    return []


def judged_addresses(ip: str | IPAddress) -> list[IPAddress]:
    """What an address is judged as: the IPv4 addresses it carries, or else itself."""
    address = ipaddress.ip_address(ip) if isinstance(ip, str) else ip
    if isinstance(address, ipaddress.IPv6Address) and address.scope_id:
        address = ipaddress.IPv6Address(str(address).split("%", 1)[0])
    return [*embedded_ipv4(address)] or [address]


def _in(address: IPAddress, nets) -> bool:
    return any(address in net for net in nets if net.version == address.version)


def _refused(address: IPAddress, refused, global_only: bool) -> bool:
    return _in(address, refused) or (global_only and not address.is_global)


def address_allowed(
    ip: str | IPAddress, *, refused, allowed: list[str] | tuple[str, ...], global_only: bool = False
) -> bool:
    """False if `ip` (or any IPv4 address it carries) lies in a `refused` network, or with `global_only`
    is not global to `ipaddress` (the IANA special-purpose registries, RFC 6890), and lies in no `allowed`
    network. `refused` holds `ipaddress` networks; `allowed` holds entries such as "127.0.0.0/8". Raises
    ValueError if `ip` is not an IP address."""
    opened = _networks(tuple(allowed))
    return all(_in(a, opened) or not _refused(a, refused, global_only) for a in judged_addresses(ip))


def address_internal(ip: str | IPAddress, *, refused, global_only: bool = False) -> bool:
    """True if `ip` (or any IPv4 address it carries) is refused as address_allowed judges it, whatever an
    allow-list opens: such an address was reached only because an operator opened it."""
    return any(_refused(a, refused, global_only) for a in judged_addresses(ip))


def address_kind(ip: str | IPAddress) -> str:
    """A word for why an address is not public ("loopback", "private", ...), for messages."""
    address = judged_addresses(ip)[0]
    for kind in ("loopback", "unspecified", "link_local", "site_local", "multicast", "private", "reserved"):
        if getattr(address, f"is_{kind}", False):
            return kind.replace("_", "-")
    # Global to `ipaddress` yet refused: a block of OUTBOUND_REFUSED_ENTRIES its registry lacks.
    return "special-use"
