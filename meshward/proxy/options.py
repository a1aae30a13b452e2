"""Sidecar options: listener addresses, limits and timeouts (no policy: that is the snapshot)."""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal

__all__ = ["Address", "SidecarOptions", "parse_address"]

Address = tuple[str, int]
MtlsMode = Literal["STRICT", "PERMISSIVE"]


def parse_address(text: str) -> Address:
    """``"127.0.0.1:8080"`` or ``"[::1]:8080"`` → (host, port); port 0 means "pick a free one"."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"invalid address {text!r} (expected HOST:PORT)")
    return host.strip("[]"), int(port)


@dataclass
class SidecarOptions:
    """How one sidecar process listens and protects itself. All sizes in bytes, times in seconds."""

    app: Address | None = None  # where inbound forwards (the app on loopback); None: 503
    inbound: Address = ("127.0.0.1", 0)
    outbound: Address = ("127.0.0.1", 0)
    admin: Address = ("127.0.0.1", 0)
    mtls_mode: MtlsMode | None = None  # None: follow the snapshot's Mesh setting
    max_header_bytes: int = 60 * 1024  # request head (431 above)
    max_headers: int = 100
    max_request_body: int = 64 * 1024 * 1024  # streamed request bodies (413 above)
    max_buffered_body: int = 4 * 1024 * 1024  # bodies a filter asked to inspect (413 above)
    connect_timeout: float = 5.0  # TCP + TLS to an upstream
    request_timeout: float = 300.0  # request forwarded → response head (504 above)
    stream_idle_timeout: float = 300.0  # no byte either way in a started exchange
    idle_timeout: float = 300.0  # keep-alive connection without a request
    header_timeout: float = 30.0  # first byte → complete request head
    handshake_timeout: float = 10.0  # TLS handshake of an inbound connection
    upstream_idle_timeout: float = 60.0  # pooled idle upstream connection
    max_idle_per_upstream: int = 64
    write_buffer_high: int = 256 * 1024  # backpressure threshold per transport
    reuse_port: bool = False  # SO_REUSEPORT, for several worker processes
    state_dir: Path | None = None
    # Gateways: the inbound faces the outside. "mesh" = mTLS with SVIDs (sidecars); "server" =
    # TLS with inbound_cert/inbound_key and no client certificate; "plain" = HTTP.
    inbound_tls: Literal["mesh", "server", "plain"] = "mesh"
    inbound_cert: Path | None = None
    inbound_key: Path | None = None

    @classmethod
    def from_mapping(cls, data: dict[str, Any]) -> SidecarOptions:
        """Build from a bootstrap's ``options`` mapping; unknown keys are the caller's error."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown sidecar options: {', '.join(unknown)}")
        opts = cls()
        for key, value in data.items():
            if key in ("app", "inbound", "outbound", "admin") and isinstance(value, str):
                value = parse_address(value)
            elif key in ("app", "inbound", "outbound", "admin") and isinstance(value, list):
                value = (str(value[0]), int(value[1]))
            elif key == "state_dir" and value is not None:
                value = Path(value)
            setattr(opts, key, value)
        if opts.mtls_mode not in (None, "STRICT", "PERMISSIVE"):
            raise ValueError(f"invalid mtls mode {opts.mtls_mode!r} (STRICT or PERMISSIVE)")
        return opts
