"""Outbound routing: which mesh service a request's authority names, compiled per snapshot.

Apps call ``http://<service>.<namespace>[:port]/…`` or ``http://<service>/…`` (a service of
their own namespace); ``.svc`` and ``.svc.cluster.local`` suffixes are accepted as in
Kubernetes. The table is pure data built once per snapshot; picking an endpoint is a
round-robin over the service's serving sidecars.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from meshward.config.endpoint import parse_endpoint
from meshward.config.snapshot import MeshSnapshot, ServiceEntry
from meshward.proxy.upstream import UpstreamTarget

__all__ = ["Route", "RouteTable", "split_authority"]


@dataclass(slots=True)
class Route:
    entry: ServiceEntry
    targets: tuple[UpstreamTarget, ...]
    _next: int = field(default=0)

    def pick(self) -> UpstreamTarget:
        """The next serving sidecar (round robin); the route must have targets."""
        i = self._next
        self._next = (i + 1) % len(self.targets)
        return self.targets[i]


def split_authority(authority: str) -> tuple[str, int | None]:
    """``"Host:8080"`` → ("host", 8080); ``"host"`` → ("host", None). IPv6 in brackets."""
    authority = authority.strip().lower()
    if authority.startswith("["):
        end = authority.find("]")
        host, rest = authority[1:end], authority[end + 1 :]
        port = rest[1:] if rest.startswith(":") else ""
    else:
        host, _, port = authority.partition(":")
    if port and not port.isdigit():
        raise ValueError(f"invalid port in {authority!r}")
    return host.rstrip("."), int(port) if port else None


class RouteTable:
    """Names → routes for one snapshot (every accepted spelling of every service)."""

    def __init__(self, snapshot: MeshSnapshot) -> None:
        own_ns = snapshot.workload.namespace
        self.routes: dict[str, Route] = {}
        #: "service.ns endpoint: why" for every endpoint skipped as invalid (the rest still route)
        self.skipped: list[str] = []
        for entry in snapshot.services.values():
            identities = frozenset(entry.identities)
            targets = []
            for ep in entry.endpoints:
                try:
                    host, port = parse_endpoint(ep)
                except ValueError as exc:
                    self.skipped.append(f"{entry.host}: {exc}")
                    continue
                targets.append(UpstreamTarget(host, port, True, entry.host, identities))
            route = Route(entry, tuple(targets))
            base = f"{entry.service}.{entry.namespace}".lower()
            for name in (base, f"{base}.svc", f"{base}.svc.cluster.local"):
                self.routes[name] = route
            if entry.namespace == own_ns:
                self.routes.setdefault(entry.service.lower(), route)

    def resolve(self, host: str) -> Route | None:
        return self.routes.get(host)
