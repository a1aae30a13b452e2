"""Pure: a gateway's route table, from its ``Gateway`` resource. First match wins."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from meshward.resources.gateway import Gateway, GatewayRoute

__all__ = ["GatewayRouteTable", "Route"]


@dataclass(frozen=True, slots=True)
class Route:
    service_host: str  # "service.namespace", what the gateway's outbound resolves
    path: str | None
    path_prefix: str | None
    hosts: frozenset[str]
    methods: frozenset[str]

    def matches(self, method: str, host: str, path: str) -> bool:
        if self.methods and method not in self.methods:
            return False
        if self.hosts and host not in self.hosts:
            return False
        if self.path is not None and path != self.path:
            return False
        return self.path_prefix is None or path.startswith(self.path_prefix)


def _route(r: GatewayRoute, namespace: str) -> Route:
    service = r.to.service if "." in r.to.service else f"{r.to.service}.{namespace}"
    return Route(
        service_host=service,
        path=r.match.path,
        path_prefix=r.match.path_prefix,
        hosts=frozenset(h.lower() for h in r.match.hosts),
        methods=frozenset(r.match.methods),
    )


class GatewayRouteTable:
    def __init__(self, routes: Sequence[Route]) -> None:
        self.routes = tuple(routes)

    @classmethod
    def of(cls, gateway: Gateway) -> GatewayRouteTable:
        ns = gateway.metadata.namespace
        return cls([_route(r, ns) for r in gateway.spec.routes])

    def resolve(self, method: str, host: str, path: str) -> Route | None:
        """The first route that matches; ``host`` without its port, any case."""
        bare = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        bare = bare.lower()
        for route in self.routes:
            if route.matches(method, bare, path):
                return route
        return None
