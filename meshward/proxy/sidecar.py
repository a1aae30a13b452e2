"""The sidecar process core: listeners, current identity and config, pool, sweeper, admin.

Drive it from a bootstrap file (``meshward proxy --bootstrap``) or from the control plane::

    sidecar = Sidecar(SidecarOptions(app=("127.0.0.1", 8080)))
    sidecar.set_identity(chain_pem, key_pem, bundle_pem)   # again on rotation
    sidecar.set_snapshot(snapshot)                        # again per generation; may raise
    await sidecar.start()                                 # binds inbound, outbound, admin
    sidecar.ship_audit(post)                              # fed by the control plane: ship audit
    ...
    await sidecar.stop()

A new identity is used for new connections; open ones keep theirs. A new snapshot is compiled
first and swapped in as one object; if it cannot be compiled :class:`SnapshotRejected` is
raised and the previous generation stays in force (the caller NACKs). ``set_snapshot`` is
:meth:`Sidecar.compile` (any thread: the control agent runs it in an executor, off the loop)
then :meth:`Sidecar.apply` (on the loop: publishes the generation in :attr:`Sidecar.configs`,
a :class:`~meshward.proxy.watch.Watch`).

The sidecar owns the process's :class:`~meshward.filters.base.SidecarRuntime` (made with the
first generation; the services filters keep across generations live in it) and its telemetry
pipeline (:mod:`meshward.proxy.pipeline`: audit spool and shipper, access log, span exporter),
configured by :meth:`Sidecar.apply` on the loop and closed by :meth:`Sidecar.stop`.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import ssl
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry

from meshward.audit.shipper import AuditPost
from meshward.config.snapshot import MeshSnapshot
from meshward.filters.base import SidecarRuntime
from meshward.proxy.admin import AdminConnection
from meshward.proxy.chain import build_chain
from meshward.proxy.compiled import (
    ChainFactory,
    CompiledConfig,
    SnapshotRejected,
    compile_snapshot,
    workload_change,
)
from meshward.proxy.downstream import DownstreamConnection, Side
from meshward.proxy.inbound import handle_inbound
from meshward.proxy.listener import Listener, bind_socket
from meshward.proxy.options import Address, SidecarOptions
from meshward.proxy.outbound import handle_outbound
from meshward.proxy.pipeline import TelemetryPipeline
from meshward.proxy.stats import ProxyCollector, ProxyStats
from meshward.proxy.upstream import UpstreamPool, UpstreamTarget
from meshward.proxy.watch import Watch
from meshward.telemetry.filter import telemetry_enabled
from meshward.tls.identity import ReloadableIdentity, SvidInfo
from meshward.tls.peer import PeerIdentity

__all__ = ["Sidecar", "SnapshotRejected"]

log = logging.getLogger("meshward.proxy")


class Sidecar:
    """One workload's data plane (one worker process)."""

    def __init__(
        self, options: SidecarOptions | None = None, chain_factory: ChainFactory = build_chain
    ) -> None:
        """``chain_factory`` is :func:`~meshward.proxy.chain.build_chain` unless a caller (a test
        of the chain machinery) supplies its own ``(snapshot, runtime) -> filters``."""
        self.options = options or SidecarOptions()
        self.chain_factory = chain_factory
        self.identity = ReloadableIdentity()
        self.stats = ProxyStats()
        self.runtime_registry = CollectorRegistry()
        self._runtime: SidecarRuntime | None = None
        #: The generation in force, swapped on the loop; ``await configs.changed(v)`` to follow it.
        self.configs: Watch[CompiledConfig] = Watch()
        self.pipeline: TelemetryPipeline | None = None  # made with the first generation
        self.pool = UpstreamPool(
            self.identity,
            lambda: self.trust_domain,
            self.options.connect_timeout,
            self.options.upstream_idle_timeout,
            self.options.max_idle_per_upstream,
            self.options.write_buffer_high,
        )
        self.runtime_registry.register(ProxyCollector(self.stats, self._gauges))
        app = self.options.app
        self.app_target = UpstreamTarget(app[0], app[1]) if app else None  # plain, on loopback
        self.inbound = Side("inbound", self, handle_inbound)
        self.outbound = Side("outbound", self, handle_outbound, eager=True)
        self._listeners: dict[str, Listener] = {}
        self._sweeper: asyncio.Task[None] | None = None
        self._xfcc: dict[str, str] = {}
        self.started = False

    # ---- inputs -------------------------------------------------------------------------------
    def set_identity(self, chain_pem: bytes, key_pem: bytes, bundle_pem: bytes) -> SvidInfo:
        """Install a new SVID + bundle for NEW connections (raises IdentityError if unusable)."""
        info = self.identity.update(chain_pem, key_pem, bundle_pem)
        self._xfcc.clear()
        log.info("identity %s (serial %x) valid until %s", info.spiffe_id.uri, info.serial, info.not_after)
        return info

    def set_snapshot(self, snapshot: MeshSnapshot) -> None:
        """Compile and atomically swap in a new generation; raise SnapshotRejected to NACK."""
        self.apply(self.compile(snapshot))

    def compile(self, snapshot: MeshSnapshot) -> CompiledConfig:
        """Build a generation without putting it in force (may run off the loop; one at a time).

        Raises :class:`SnapshotRejected` if it cannot be compiled, or if it is for another
        workload or trust domain than the one this sidecar started with.
        """
        runtime = self._runtime
        if runtime is None:
            runtime = SidecarRuntime(
                workload=snapshot.workload,
                trust_domain=snapshot.trust_domain,
                state_dir=self.options.state_dir,
                metrics_registry=self.runtime_registry,
            )
        elif snapshot.workload != runtime.workload or snapshot.trust_domain != runtime.trust_domain:
            self.stats.config_rejected += 1
            raise SnapshotRejected(snapshot.generation, workload_change(runtime, snapshot))
        try:
            compiled = compile_snapshot(snapshot, runtime, self.options.mtls_mode, self.chain_factory)
        except SnapshotRejected:
            self.stats.config_rejected += 1
            raise
        self._runtime = runtime
        return compiled

    def apply(self, compiled: CompiledConfig) -> None:
        """Put a compiled generation in force (on the loop, if one runs): one swap. Raises
        SnapshotRejected (NACK, the old generation stays) if its telemetry cannot be opened."""
        snapshot = compiled.snapshot
        assert self._runtime is not None  # made by compile()
        self._configure_telemetry(self._runtime, snapshot)
        self.configs.set(compiled)
        revoked = frozenset(snapshot.revoked)
        if revoked != self.identity.revoked:  # refused at the next handshakes, and cut now
            self.identity.revoked = revoked
            self._cut_revoked(revoked)
        self.inbound.eager = compiled.chain.eager
        log.info(
            "config generation %s: %d filters, %d services, mTLS %s",
            snapshot.generation,
            len(compiled.chain),
            len(snapshot.services),
            compiled.mtls_mode,
        )

    def _configure_telemetry(self, runtime: SidecarRuntime, snapshot: MeshSnapshot) -> None:
        """Open what ``snapshot`` asks of the telemetry pipeline (made with the first generation);
        raise SnapshotRejected if it cannot (an access log that cannot be opened NACKs, as a bad
        policy does)."""
        pipeline = self.pipeline
        try:
            if pipeline is None and telemetry_enabled():
                pipeline = TelemetryPipeline(runtime, self._not_after)
            if pipeline is not None:
                pipeline.configure(snapshot)
        except Exception as exc:
            if pipeline is not None and pipeline is not self.pipeline:
                pipeline.close()
            self.stats.config_rejected += 1
            log.warning("config generation %s rejected: telemetry: %s", snapshot.generation, exc)
            raise SnapshotRejected(snapshot.generation, f"telemetry: {type(exc).__name__}: {exc}") from exc
        self.pipeline = pipeline

    def ship_audit(self, post: AuditPost) -> None:
        """Ship the audit spool with ``post`` from now on (on the running loop, once)."""
        if self.pipeline is not None:
            self.pipeline.ship(post)

    def _cut_revoked(self, revoked: frozenset[str]) -> None:
        """Close inbound connections from a peer whose certificate is now revoked, and every idle
        upstream connection (they reconnect, and the handshake checks the new list)."""
        for conn in list(self.inbound.connections):
            if conn.peer_identity is not None and conn.peer_identity.serial in revoked:
                log.info("closing the connection of revoked %s", conn.peer_identity.uri)
                conn.close()
        self.pool.close_all()

    # ---- state --------------------------------------------------------------------------------
    @property
    def runtime(self) -> SidecarRuntime:
        if self._runtime is None:
            raise RuntimeError("sidecar has no snapshot yet: call set_snapshot() first")
        return self._runtime

    @property
    def config(self) -> CompiledConfig:
        config = self.configs.current
        if config is None:
            raise RuntimeError("sidecar has no snapshot yet: call set_snapshot() first")
        return config

    @property
    def trust_domain(self) -> str:
        return self.config.snapshot.trust_domain

    @property
    def ready(self) -> bool:
        return self.started and self.configs.current is not None and self.identity.loaded

    def xfcc(self, peer: PeerIdentity) -> str:
        """Envoy's X-Forwarded-Client-Cert value for a peer (cached per peer certificate)."""
        value = self._xfcc.get(peer.cert_sha256)
        if value is None:
            own = self.identity.info.spiffe_id.uri
            value = f"By={own};Hash={peer.cert_sha256};URI={peer.uri}"
            if len(self._xfcc) > 4096:
                self._xfcc.clear()
            self._xfcc[peer.cert_sha256] = value
        return value

    def _address(self, name: str) -> Address:
        listener = self._listeners.get(name)
        if listener is None:
            raise RuntimeError(f"{name} listener is not started")
        return listener.address

    @property
    def inbound_address(self) -> Address:
        return self._address("inbound")

    @property
    def outbound_address(self) -> Address:
        return self._address("outbound")

    @property
    def admin_address(self) -> Address:
        return self._address("admin")

    def addresses(self) -> dict[str, str]:
        """``{"inbound": "127.0.0.1:15006", ...}`` for every started listener."""
        return {name: f"{lst.address[0]}:{lst.address[1]}" for name, lst in self._listeners.items()}

    def route_inbound_to(self, address: Address) -> None:
        """Forward inbound requests to ``address`` (a gateway: its own outbound listener)."""
        self.options.app = address
        self.app_target = UpstreamTarget(address[0], address[1])

    # ---- lifecycle ----------------------------------------------------------------------------
    async def start(self, admin: bool = True) -> None:
        """Bind the listeners (port 0 = a free port; see :meth:`addresses`)."""
        if not self.identity.loaded or self.configs.current is None:
            raise RuntimeError("set_identity() and set_snapshot() must be called before start()")
        opts = self.options

        def server_tls() -> ssl.SSLContext:
            return self.identity.server_context

        inbound_tls: Callable[[], ssl.SSLContext] | None = server_tls
        if opts.inbound_tls == "plain":
            inbound_tls = None
        elif opts.inbound_tls == "server":
            from meshward.gateway.tls import public_server_context

            assert opts.inbound_cert is not None and opts.inbound_key is not None
            public = public_server_context(opts.inbound_cert, opts.inbound_key)

            def public_tls() -> ssl.SSLContext:
                return public

            inbound_tls = public_tls

        def permissive() -> bool:
            return opts.inbound_tls == "mesh" and self.config.mtls_mode == "PERMISSIVE"

        def inbound_factory() -> DownstreamConnection:
            return DownstreamConnection(self.inbound)

        def outbound_factory() -> DownstreamConnection:
            return DownstreamConnection(self.outbound)

        socks = []
        try:
            socks.append(("inbound", bind_socket(*opts.inbound, reuse_port=opts.reuse_port)))
            socks.append(("outbound", bind_socket(*opts.outbound, reuse_port=opts.reuse_port)))
            if admin:
                socks.append(("admin", bind_socket(*opts.admin)))
        except OSError:
            for _, s in socks:
                s.close()
            raise
        for name, sock in socks:
            if name == "inbound":
                lst = Listener(
                    name, sock, inbound_factory, self.stats, inbound_tls, permissive, opts.handshake_timeout
                )
            elif name == "outbound":
                lst = Listener(name, sock, outbound_factory, self.stats)
            else:
                lst = Listener(name, sock, lambda: AdminConnection(self), self.stats)
            self._listeners[name] = lst
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep())
        self.started = True
        log.info("listening: %s", self.addresses())

    async def stop(self) -> None:
        """Close listeners, every open connection and the pool."""
        self.started = False
        for lst in self._listeners.values():
            lst.close()
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        for side in (self.inbound, self.outbound):
            for conn in list(side.connections):
                conn.close()
        self.pool.close_all()
        if self.pipeline is not None:
            await self.pipeline.stop()
        await asyncio.sleep(0)

    async def _sweep(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(1.0)
            now = loop.time()
            for side in (self.inbound, self.outbound):
                for conn in list(side.connections):
                    try:
                        conn.check_timeouts(now)
                    except Exception:
                        log.exception("timeout check failed")
            self.pool.sweep(now)

    # ---- observability ------------------------------------------------------------------------
    def _not_after(self) -> dt.datetime | None:
        return self.identity.info.not_after if self.identity.loaded else None

    def _gauges(self) -> dict[str, float]:
        gauges: dict[str, float] = {
            "upstream_idle_connections": float(self.pool.idle_count),
            "upstream_connects": float(self.pool.connects),
            "upstream_reuses": float(self.pool.reuses),
        }
        config = self.configs.current
        if config is not None:
            gauges["config_generation"] = float(config.generation)
            gauges["config_endpoints_skipped"] = float(len(config.routes.skipped))
        if self.identity.loaded:
            remaining = self.identity.info.not_after - dt.datetime.now(dt.UTC)
            gauges["identity_expiry_seconds"] = remaining.total_seconds()
        return gauges

    def config_dump(self) -> dict[str, Any]:
        """What this sidecar enforces right now (no key material)."""
        doc: dict[str, Any] = {"ready": self.ready, "listeners": self.addresses()}
        opts = self.options
        doc["app"] = f"{opts.app[0]}:{opts.app[1]}" if opts.app else None
        if self.identity.loaded:
            info = self.identity.info
            doc["identity"] = {
                "spiffe_id": info.spiffe_id.uri,
                "serial": f"{info.serial:x}",
                "not_after": info.not_after.isoformat(),
                "rotations": self.identity.generation,
            }
        config = self.configs.current
        if config is not None:
            snap = config.snapshot
            doc.update(
                generation=snap.generation,
                trust_domain=snap.trust_domain,
                mtls_mode=config.mtls_mode,
                outbound_policy="ALLOW_ANY" if config.allow_any_outbound else "REGISTRY_ONLY",
                filters=[f.name for f in config.chain.filters],
                snapshot=snap.to_json(),
            )
        doc["limits"] = {
            "max_header_bytes": opts.max_header_bytes,
            "max_headers": opts.max_headers,
            "max_request_body": opts.max_request_body,
            "max_buffered_body": opts.max_buffered_body,
            "request_timeout": opts.request_timeout,
            "idle_timeout": opts.idle_timeout,
        }
        return doc
