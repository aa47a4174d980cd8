"""Whether an address may be connected to: one rule for outbound HTTP and for customer databases."""

from __future__ import annotations

import ipaddress
from functools import lru_cache


def networks(*entries: str) -> list:
    return [ipaddress.ip_network(e, strict=False) for e in entries]


@lru_cache(maxsize=16)
def _allowed(entries: tuple[str, ...]):
    return networks(*entries)


def address_allowed(ip: str, *, refused: list, allowed: list[str] | tuple[str, ...]) -> bool:
    """False if `ip` lies in a `refused` network and in no `allowed` one. An IPv4-mapped IPv6 address is
    judged as the IPv4 address it carries."""
    address = ipaddress.ip_address(ip)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    if any(address in net for net in _allowed(tuple(allowed))):
        return True
    return not any(address in net for net in refused if net.version == address.version)
