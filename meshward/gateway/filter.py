"""The gateway's routing filter: which mesh service a request goes to, or 404.

It runs right after end-user authentication and before authorization, so that nothing is spent
on a request the gateway cannot route. The original ``Host`` stays what policies see
(``ctx.host``); only the forwarded ``host`` header is rewritten to the service, which the
gateway's own outbound listener then resolves and calls over mTLS.
"""

from __future__ import annotations

from meshward.config.snapshot import MeshSnapshot
from meshward.filters.base import Denial, Filter, RequestContext, SidecarRuntime
from meshward.gateway.routes import GatewayRouteTable
from meshward.resources.gateway import Gateway

__all__ = ["GatewayRouteFilter", "build", "gateway_of"]


def gateway_of(snapshot: MeshSnapshot) -> Gateway | None:
    """The ``Gateway`` resource this workload is, if any."""
    w = snapshot.workload
    for r in snapshot.of_kind(Gateway.kind_name):
        if isinstance(r, Gateway) and r.metadata.namespace == w.namespace and r.metadata.name == w.name:
            return r
    return None


class GatewayRouteFilter(Filter):
    name = "gateway"
    eager_safe = True

    def __init__(self, table: GatewayRouteTable) -> None:
        self.table = table

    async def on_request(self, ctx: RequestContext) -> Denial | None:
        route = self.table.resolve(ctx.method, ctx.host, ctx.path)
        if route is None:
            return Denial(kind="not_found", message="no route for this request")
        ctx.headers["host"] = route.service_host
        return None


def build(snapshot: MeshSnapshot, runtime: SidecarRuntime) -> Filter | None:
    gateway = gateway_of(snapshot)
    return None if gateway is None else GatewayRouteFilter(GatewayRouteTable.of(gateway))
