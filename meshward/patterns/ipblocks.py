"""IP blocks of policies (``ipBlocks``, ``remoteIpBlocks``, ``source.ip``): single addresses or
CIDRs, as integer ranges. IPv4 and IPv6 share one int space (IPv6 above the IPv4 range) and an
IPv4-mapped IPv6 address counts as its IPv4 address, so a match is integer comparisons.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from typing import Final

__all__ = ["check_ip_block", "ip_ranges", "ip_to_int"]

_V6_BASE: Final = 1 << 32  # IPv6 addresses live above the IPv4 range in one int space


def check_ip_block(value: str) -> None:
    try:
        ipaddress.ip_network(value, strict=False)
    except ValueError as exc:
        raise ValueError(f"{value!r} is not an IP address or CIDR block") from exc


def ip_ranges(values: Iterable[str]) -> tuple[tuple[int, int], ...]:
    """IP blocks as sorted, de-duplicated ``(low, high)`` ranges in the matchers' int space."""
    return tuple(sorted({_ip_range(v) for v in values}))


def ip_to_int(text: str) -> int | None:
    """An address (as it appears on the wire) in the matchers' int space; None if invalid."""
    try:  # fast path: dotted-quad IPv4 (inet_pton is strict: no octal, no short forms)
        return int.from_bytes(socket.inet_pton(socket.AF_INET, text), "big")
    except (OSError, ValueError):
        pass
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address):
        mapped = addr.ipv4_mapped
        if mapped is not None:
            return int(mapped)
        return _V6_BASE + int(addr)
    return int(addr)


def _ip_range(value: str) -> tuple[int, int]:
    net = ipaddress.ip_network(value, strict=False)
    base = _V6_BASE if net.version == 6 else 0
    return base + int(net.network_address), base + int(net.broadcast_address)
