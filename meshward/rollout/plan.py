"""Per service, per generation: its endpoints by subset, its compiled ``ModelRoute``, and the
state that outlives generations (the balancer's endpoint health, the window of outcomes).

:func:`service_plans` is called when a sidecar compiles a snapshot
(:class:`meshward.proxy.routes.RouteTable`) with the process's :class:`EndpointState` (a runtime
service), so a new generation keeps counting in-flight requests and ejections where the last
one stopped.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from meshward.config.snapshot import MeshSnapshot
from meshward.filters.base import SidecarRuntime
from meshward.resources.modelroute import ModelRoute
from meshward.rollout.balancer import Balancer
from meshward.rollout.selection import CompiledRoute, subset_of
from meshward.rollout.window import WindowStats

__all__ = ["EndpointState", "ServicePlan", "endpoint_state", "service_plans"]


class EndpointState(dict[str, tuple[Balancer, WindowStats]]):
    """Per ``service.namespace``: its balancer and window of outcomes, across generations."""


def endpoint_state(runtime: SidecarRuntime) -> EndpointState:
    """This sidecar process's endpoint state (made on first use)."""
    return runtime.service(EndpointState)


@dataclass(slots=True)
class ServicePlan:
    keys: tuple[str, ...] = ()  # "host:port" of each target, in the route's target order
    members: dict[str, tuple[str, ...]] = field(default_factory=dict)  # subset → keys
    failover: tuple[str, ...] = ()  # keys a request may fail over to (none of a subset without weight)
    route: CompiledRoute | None = None
    balancer: Balancer = field(default_factory=Balancer)
    window: WindowStats | None = None
    principal: str = ""  # this sidecar's identity in Istio form (rules and stickiness)
    generation: int = 0
    requests: int = 0  # counter for non-sticky draws

    def candidates(self, subset: str | None) -> tuple[str, ...]:
        """Endpoints of ``subset``; a subset with none falls back to stable, then to all."""
        if subset is None or self.route is None:
            return self.keys
        found = self.members.get(subset)
        if found:
            return found
        stable = self.members.get(self.route.stable)
        return stable or self.keys

    def subset_of(self, key: str) -> str | None:
        for name, keys in self.members.items():
            if key in keys:
                return name
        return None


def service_plans(snapshot: MeshSnapshot, state: EndpointState) -> dict[str, ServicePlan]:
    """``service.namespace`` → its plan for this snapshot."""
    routes: dict[tuple[str, str], ModelRoute] = {}
    for r in sorted(snapshot.of_kind("ModelRoute"), key=lambda r: r.metadata.name):
        if isinstance(r, ModelRoute):
            routes.setdefault((r.metadata.namespace, r.spec.service), r)
    principal = snapshot.workload.spiffe_id(snapshot.trust_domain).removeprefix("spiffe://")
    plans: dict[str, ServicePlan] = {}
    for host, entry in snapshot.services.items():
        balancer, window = state.get(host) or state.setdefault(host, (Balancer(), WindowStats(host)))
        model_route = routes.get((entry.namespace, entry.service))
        compiled = CompiledRoute(model_route, snapshot.trust_domain) if model_route is not None else None
        keys = tuple(entry.endpoints)
        members: dict[str, list[str]] = {}
        barred: set[str] = set()
        if compiled is not None:  # most services have no ModelRoute: no subsets, all fail over
            for ep in keys:
                subset = subset_of(entry.endpoint_labels.get(ep, {}), compiled.subsets)
                if subset is not None:
                    members.setdefault(subset, []).append(ep)
            barred = {ep for name, eps in members.items() if name not in compiled.serving for ep in eps}
        plans[host] = ServicePlan(
            keys=keys,
            members={k: tuple(v) for k, v in members.items()},
            failover=tuple(ep for ep in keys if ep not in barred) if barred else keys,
            route=compiled,
            balancer=balancer,
            window=window if compiled is not None else None,
            principal=principal,
            generation=snapshot.generation,
        )
    return plans
