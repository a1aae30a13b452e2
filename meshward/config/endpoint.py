"""Pure: what a sidecar's registered inbound endpoint may be (``HOST:PORT``), checked once.

The control plane refuses a registration whose endpoint fails :func:`parse_endpoint`; the
services table (:mod:`meshward.config.build`) and each sidecar's route table skip (and report)
any endpoint that still fails it — one bad record never fails a whole snapshot.

Accepted: an IPv4 or IPv6 literal (IPv6 in brackets) that is not unspecified, multicast or
reserved, or ``localhost``; a port 1–65535 in plain decimal digits.
"""

from __future__ import annotations

import ipaddress

__all__ = ["MAX_ENDPOINT_LENGTH", "parse_endpoint"]

MAX_ENDPOINT_LENGTH = 64


def parse_endpoint(text: str) -> tuple[str, int]:
    """``"127.0.0.1:8443"`` / ``"[::1]:8443"`` / ``"localhost:8443"`` → (host, port); ValueError else."""
    if not isinstance(text, str) or len(text) > MAX_ENDPOINT_LENGTH:
        raise ValueError(f"endpoint must be HOST:PORT of at most {MAX_ENDPOINT_LENGTH} characters")
    host, sep, port = text.rpartition(":")
    if not sep or not port.isascii() or not port.isdigit() or len(port) > 5 or not 1 <= int(port) <= 65535:
        raise ValueError(f"endpoint {text!r}: port must be 1-65535")
    if host == "localhost":
        return host, int(port)
    bracketed = host.startswith("[") and host.endswith("]")
    try:
        ip = ipaddress.ip_address(host[1:-1] if bracketed else host)
    except ValueError:
        raise ValueError(f"endpoint {text!r}: host must be an IP address or localhost") from None
    if (ip.version == 6) != bracketed:
        raise ValueError(f"endpoint {text!r}: an IPv6 host goes in brackets, an IPv4 one does not")
    if ip.is_unspecified or ip.is_multicast or (ip.is_reserved and not ip.is_loopback):
        raise ValueError(f"endpoint {text!r}: {ip} is not an address a sidecar listens on")
    return str(ip), int(port)
