"""Outbound routing: which mesh service a request's authority names, compiled per snapshot.

Apps call ``http://<service>.<namespace>[:port]/…`` or ``http://<service>/…`` (a service of
their own namespace); ``.svc`` and ``.svc.cluster.local`` suffixes are accepted as in
Kubernetes. The table is pure data built once per snapshot. Which endpoint serves a request
(subsets of a ``ModelRoute``, least request, outlier ejection) is decided by
:mod:`meshward.rollout`; the per-endpoint state it keeps outlives generations (the runtime's
:class:`~meshward.rollout.plan.EndpointState`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from meshward.config.endpoint import parse_endpoint
from meshward.config.snapshot import MeshSnapshot, ServiceEntry
from meshward.proxy.upstream import UpstreamTarget
from meshward.rollout.plan import EndpointState, ServicePlan, service_plans

__all__ = ["Route", "RouteTable", "split_authority"]


@dataclass(slots=True)
class Route:
    entry: ServiceEntry
    targets: tuple[UpstreamTarget, ...]
    plan: ServicePlan = field(default_factory=ServicePlan)


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


#: id(entry) → (entry, its targets, its skipped endpoints): a snapshot decoder hands the same
#: ServiceEntry object to every generation in which the entry did not change (see
#: :class:`meshward.config.snapshot.SnapshotDecoder`), so its targets are built once. The entry
#: is held in the value, so an id is never reused while cached; the cache is bounded.
_TARGETS: dict[int, tuple[ServiceEntry, tuple[UpstreamTarget, ...], tuple[str, ...]]] = {}
_TARGETS_MAX = 4096


def _targets(entry: ServiceEntry) -> tuple[tuple[UpstreamTarget, ...], tuple[str, ...]]:
    """The upstream targets of ``entry``'s endpoints, and why any endpoint was skipped."""
    cached = _TARGETS.get(id(entry))
    if cached is not None and cached[0] is entry:
        return cached[1], cached[2]
    identities = frozenset(entry.identities)
    targets: list[UpstreamTarget] = []
    skipped: list[str] = []
    for ep in entry.endpoints:
        try:
            host, port = parse_endpoint(ep)
        except ValueError as exc:
            skipped.append(f"{entry.host}: {exc}")
            continue
        targets.append(UpstreamTarget(host, port, True, entry.host, identities))
    if len(_TARGETS) >= _TARGETS_MAX:
        _TARGETS.clear()
    built = (entry, tuple(targets), tuple(skipped))
    _TARGETS[id(entry)] = built
    return built[1], built[2]


class RouteTable:
    """Names → routes for one snapshot (every accepted spelling of every service)."""

    def __init__(self, snapshot: MeshSnapshot, state: EndpointState | None = None) -> None:
        own_ns = snapshot.workload.namespace
        self.routes: dict[str, Route] = {}
        #: "service.ns endpoint: why" for every endpoint skipped as invalid (the rest still route)
        self.skipped: list[str] = []
        plans = service_plans(snapshot, EndpointState() if state is None else state)
        for entry in snapshot.services.values():
            targets, skipped = _targets(entry)
            self.skipped.extend(skipped)
            route = Route(entry, targets, plans[entry.host])
            base = f"{entry.service}.{entry.namespace}".lower()
            for name in (base, f"{base}.svc", f"{base}.svc.cluster.local"):
                self.routes[name] = route
            if entry.namespace == own_ns:
                self.routes.setdefault(entry.service.lower(), route)
        # A workload's own address (isolation: netns) names its service too: a connection
        # redirected there keeps that address as its original destination. An address that
        # several services share (loopback, in local mode) names none.
        owners: dict[str, list[Route]] = {}
        for route in {id(r): r for r in self.routes.values()}.values():
            for host in {t.host for t in route.targets}:
                owners.setdefault(host, []).append(route)
        self.by_address = {
            host: found[0]
            for host, found in owners.items()
            if len(found) == 1 and not host.startswith("127.") and host not in ("::1", "localhost")
        }

    def resolve(self, host: str) -> Route | None:
        return self.routes.get(host) or self.by_address.get(host)
