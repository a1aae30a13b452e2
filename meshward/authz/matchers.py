"""Value patterns of authorization policies: validation, normalization and their parts.

Istio's string forms: exact ``abc``, prefix ``abc*``, suffix ``*abc``, presence ``*`` (any
non-empty value). Paths add URI templates: ``{*}`` one path segment, ``{**}`` anything that
follows (must be the last operator). IP blocks are single addresses or CIDRs. Principals are
compared in Istio's form ``<trust-domain>/ns/<ns>/sa/<sa>``; a policy may spell them in any of
the three forms of :mod:`meshward.identity.spiffe`.

The ``check_*`` functions are the load-time validation used by the resource model; they raise
``ValueError`` naming the value. The rest prepares what :mod:`meshward.authz.compiler` turns
into code: principal patterns in Istio's form, URI templates as one regex, IP blocks as integer
ranges (IPv4 and IPv6 in one int space, IPv4-mapped IPv6 addresses as IPv4).
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Iterable
from typing import Final

__all__ = [
    "check_ip_block",
    "check_path_pattern",
    "check_string_pattern",
    "ip_ranges",
    "ip_to_int",
    "normalize_principal_pattern",
    "template_regex",
]

_TEMPLATE_OPERATOR: Final = re.compile(r"\{\*\*\}|\{\*\}")
_V6_BASE: Final = 1 << 32  # IPv6 addresses live above the IPv4 range in one int space


def check_string_pattern(value: str) -> None:
    """Refuse empty values and wildcards other than a leading or trailing ``*``."""
    if not value:
        raise ValueError("empty value (use '*' to match any value)")
    inner = value[1:-1] if len(value) > 1 else ""
    if "*" in inner or value == "**":
        raise ValueError(f"{value!r}: '*' is only allowed at the start or the end of a value")
    if len(value) > 1 and value.startswith("*") and value.endswith("*"):
        raise ValueError(f"{value!r}: use either a prefix ('abc*') or a suffix ('*abc') match, not both")


def check_path_pattern(value: str) -> None:
    """Paths: the string forms, or a URI template with ``{*}`` / ``{**}``."""
    if "{" not in value and "}" not in value:
        check_string_pattern(value)
        return
    if not value.startswith("/"):
        raise ValueError(f"path template {value!r} must start with '/'")
    literals = _TEMPLATE_OPERATOR.split(value)
    if any(c in part for part in literals for c in "{}*"):
        raise ValueError(f"path template {value!r}: only the operators {{*}} and {{**}} are supported")
    operators = _TEMPLATE_OPERATOR.findall(value)
    if "{**}" in operators[:-1]:
        raise ValueError(f"path template {value!r}: {{**}} must be the last operator")


def check_ip_block(value: str) -> None:
    try:
        ipaddress.ip_network(value, strict=False)
    except ValueError as exc:
        raise ValueError(f"{value!r} is not an IP address or CIDR block") from exc


def normalize_principal_pattern(value: str, trust_domain: str) -> str:
    """Rewrite a principal pattern to Istio's form: strip ``spiffe://``; expand the short form
    ``ns/sa`` (also ``ns/*``, ``ns/prefix*`` and ``*/sa``) with the mesh's trust domain."""
    if value == "*":
        return value
    if value.startswith("spiffe://"):
        return value[len("spiffe://") :]
    if value.count("/") == 1:
        ns, sa = value.split("/")
        if ns == "*":  # any namespace, this service account: a suffix match
            return f"*/sa/{sa}"
        return f"{trust_domain}/ns/{ns}/sa/{sa}"
    return value


def template_regex(templates: Iterable[str]) -> re.Pattern[str]:
    """One anchored-by-``fullmatch`` regex for URI templates (``{*}`` / ``{**}``)."""
    return re.compile("|".join(f"(?:{_template_regex(t)})" for t in templates))


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


def _template_regex(template: str) -> str:
    parts: list[str] = []
    pos = 0
    for m in _TEMPLATE_OPERATOR.finditer(template):
        parts.append(re.escape(template[pos : m.start()]))
        parts.append("[^/]+" if m.group(0) == "{*}" else ".*")
        pos = m.end()
    parts.append(re.escape(template[pos:]))
    return "".join(parts)
