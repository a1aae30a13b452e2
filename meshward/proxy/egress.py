"""The outbound side's path to the outside: external services, REGISTRY_ONLY, CONNECT tunnels.

:func:`meshward.proxy.outbound.handle_outbound` hands over every request whose host is not a
mesh service (unless ``ALLOW_ANY`` lets an undeclared host pass as before):

- an undeclared host (REGISTRY_ONLY, the default) → 403 whose body names the host and why,
  logged and audited by the telemetry filter;
- a declared ``ExternalService`` host → the egress chain (:mod:`meshward.egress.chain`:
  EgressPolicy, rate limits and token budgets, DLP, spend, credential, telemetry), then the
  request goes out — with TLS originated by the sidecar for an ``HTTPS`` port (chain and host
  name verified against ``caBundle`` or the system store) — to a fixed address or by DNS.

``CONNECT host:port`` (apps using ``HTTPS_PROXY``) gets a host/port decision only: the tunnel is
opened if an EgressPolicy allows that host and port at all. The bytes inside are the app's own
TLS: no L7 rule, DLP, token budget or credential injection applies to them (documented in
``docs/egress.md``); REGISTRY_ONLY and the host-level policy still hold.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import TYPE_CHECKING

from meshward.ai.protocol import classify
from meshward.ai.types import AIRequest
from meshward.config.snapshot import MeshSnapshot
from meshward.egress.chain import EgressConfig, compile_egress_config
from meshward.egress.engine import ExternalEntry
from meshward.egress.filters import egress_denial
from meshward.filters.base import RequestContext, SidecarRuntime
from meshward.http.errors import RemoteProtocolError
from meshward.http.framing import HOP_BY_HOP, connection_tokens
from meshward.http.hygiene import clean_request_headers
from meshward.http.normalize import normalize_path
from meshward.proxy.forwarded import field_lines
from meshward.proxy.hooks import CompiledChain
from meshward.proxy.routes import RouteTable, split_authority
from meshward.proxy.upstream import UpstreamError, UpstreamTarget

if TYPE_CHECKING:
    from meshward.proxy.exchange import Exchange

__all__ = ["EgressSide", "compile_egress_side", "handle_connect", "handle_external"]

_NOT_FORWARDED = frozenset(h.decode() for h in HOP_BY_HOP) | {
    "host",
    "content-length",
    "x-forwarded-client-cert",
    "x-forwarded-proto",
}
_ESTABLISHED = b"HTTP/1.1 200 Connection Established\r\n\r\n"
_NOT_REGISTERED = (
    "neither a mesh service nor a declared ExternalService (outboundTrafficPolicy REGISTRY_ONLY)"
)


class EgressSide:
    """One generation's egress, compiled for the hot path."""

    __slots__ = ("chains", "config", "next_endpoint", "tunnels", "unregistered")

    def __init__(self, config: EgressConfig) -> None:
        self.config = config
        self.chains = {host: CompiledChain(filters) for host, filters in config.chains.items()}
        self.tunnels = {host: CompiledChain(filters) for host, filters in config.tunnels.items()}
        self.unregistered = CompiledChain(config.unregistered)
        self.next_endpoint = itertools.count()

    def handles(self, host: str) -> bool:
        return host in self.chains


def compile_egress_side(snapshot: MeshSnapshot, runtime: SidecarRuntime) -> EgressSide:
    return EgressSide(compile_egress_config(snapshot, runtime))


def _context(
    ex: Exchange, side: EgressSide, host: str, port: int, raw_path: str, query: str
) -> RequestContext:
    head = ex.head
    slashes = ex.conn.sidecar.config.snapshot.mesh.path_normalization.encoded_slashes
    path = normalize_path(raw_path, slashes) if raw_path not in ("*", "") else raw_path
    ctx = RequestContext(
        request_id=ex.request_id,
        direction="outbound",
        peer=side.config.self_peer,
        method=head.method,
        path=path,
        query=query,
        host=host,
        headers=clean_request_headers(head.headers, head.connection),
        destination_port=port,
        start=ex.start,
    )
    ex.ctx = ctx
    return ctx


def _refuse(ex: Exchange, side: EgressSide, ctx: RequestContext, reason: str, why: str) -> None:
    if ex.chain is None:  # telemetry with the host as destination when it is a declared one
        ex.chain = side.tunnels.get(ctx.host, side.unregistered)
    ctx.scratch["authz.reason"] = reason
    ex.deny(egress_denial(ctx.host, reason, why))


async def handle_external(
    ex: Exchange, side: EgressSide, host: str, port: int | None, path: str, query: str
) -> None:
    """A plain-HTTP request from the app for an external (or undeclared) host."""
    entry = side.config.table.resolve(host)
    ctx = _context(ex, side, host, port or 80, path, query)
    if entry is None:
        _refuse(ex, side, ctx, f"{host} is {_NOT_REGISTERED}", "not_registered")
        return
    external_port = entry.port_for(port)
    if external_port is None:
        ctx.destination_port = port or 80
        _refuse(ex, side, ctx, f"port {port} is not declared by ExternalService {entry.service}", "port")
        return
    ctx.destination_port = external_port
    head = ex.head
    if head.upgrade:
        raise RemoteProtocolError("upgrades to external services are not supported")
    chain = ex.chain = side.chains[host]
    if entry.protocol == "openai":
        ctx.ai = classify(head.method, ctx.path, ctx.headers, None)
    if not chain.eager:
        await asyncio.sleep(0)  # a filter needs a real Task (e.g. a Redis-backed limit)
    if chain.body and head.has_body and any(f.wants_request_body(ctx) for f in chain.body):
        ctx.body = await ex.read_body(ex.conn.sidecar.options.max_buffered_body)
        if entry.protocol == "openai":
            ctx.ai = classify(head.method, ctx.path, ctx.headers, ctx.body)
    for f in chain.requests:
        denial = await f.on_request(ctx)
        if denial is not None:
            ex.deny(denial)
            return
    if ex.finished:
        return
    tls = entry.ports[external_port]
    addr, addr_port = entry.endpoint(next(side.next_endpoint), external_port)
    target = UpstreamTarget(
        addr, addr_port, tls, entry.host, ssl_context=side.config.contexts.get(host) if tls else None
    )
    body = ctx.body if ctx.body_rewritten else None
    try:
        await ex.forward(target, _request_head(ex, ctx, entry, external_port, tls, body), body)
    except UpstreamError as exc:
        if exc.name == "upstream_tls":  # a server that could not prove it is the host: audited
            ctx.audit_marks.append(f"egress-tls-refused:{entry.host}")
        raise


def _request_head(
    ex: Exchange, ctx: RequestContext, entry: ExternalEntry, port: int, tls: bool, body: bytes | None
) -> bytes:
    head = ex.head
    target = f"{ctx.path}?{ctx.query}" if ctx.query else ctx.path
    default = 443 if tls else 80
    authority = entry.host if port == default else f"{entry.host}:{port}"
    named = {t.decode("latin-1") for t in connection_tokens(head.connection)} if head.connection else set()
    lines = [f"{head.method} {target} HTTP/1.1\r\n", f"host: {authority}\r\n"]
    lines += field_lines(ex, ctx, _NOT_FORWARDED | named, body)
    lines.append("\r\n")
    text = "".join(lines)
    n = len(lines)
    if text.count("\n") != n or text.count("\r") != n or "\x00" in text:
        text = "".join(
            line for line in lines if line.count("\n") == line.count("\r") == 1 and "\x00" not in line
        )
    return text.encode("latin-1")


async def handle_connect(ex: Exchange, side: EgressSide, routes: RouteTable, allow_any: bool) -> None:
    """``CONNECT host:port``: a host/port-level decision, then a raw tunnel (see the docstring)."""
    try:
        host, port = split_authority(ex.head.target)
    except ValueError as exc:
        raise RemoteProtocolError(str(exc)) from None
    if port is None:
        raise RemoteProtocolError("CONNECT needs host:port")
    if routes.resolve(host) is not None:
        ex.fail("connect_method", None)  # mesh services are called over http://
        return
    ctx = _context(ex, side, host, port, "", "")
    ctx.ai = AIRequest()
    entry = side.config.table.resolve(host)
    if entry is None:
        if not allow_any:
            _refuse(ex, side, ctx, f"{host} is {_NOT_REGISTERED}", "not_registered")
            return
        ex.chain = side.unregistered
        address = (host, port)
    else:
        ex.chain = side.tunnels[host]
        if port not in entry.ports:
            _refuse(ex, side, ctx, f"port {port} is not declared by ExternalService {entry.service}", "port")
            return
        decision = side.config.engine.allows_host(host, port)
        ctx.scratch["authz.reason"] = decision.reason
        if not decision.allowed:
            ctx.decision = "deny"
            ex.deny(egress_denial(host, decision.reason, "egress_policy"))
            return
        ctx.policy, ctx.rule = decision.policy, decision.rule
        address = entry.endpoint(next(side.next_endpoint), port)
    up = await ex.conn.sidecar.pool.connect(UpstreamTarget(address[0], address[1]))
    if ex.finished:
        up.close()
        return
    up.upgraded = True  # raw bytes from now on, both ways
    up.exchange = ex
    ex.upstream = up
    ex.open_tunnel(200, _ESTABLISHED)
