"""One generation of config, compiled for the hot path and swapped as a single object.

:class:`CompiledConfig` holds everything a request needs from a snapshot (the filter chain
with its hook lists precomputed, the outbound route table, the mTLS mode), so the per-request
code reads one attribute and never sees a half-applied generation.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from meshward.config.snapshot import MeshSnapshot
from meshward.filters.base import Filter, SidecarRuntime
from meshward.proxy.chain import build_chain
from meshward.proxy.egress import EgressSide, compile_egress_side
from meshward.proxy.hooks import CompiledChain
from meshward.proxy.routes import RouteTable
from meshward.rollout.plan import endpoint_state

__all__ = [
    "ChainFactory",
    "CompiledChain",
    "CompiledConfig",
    "SnapshotRejected",
    "compile_snapshot",
    "workload_change",
]

log = logging.getLogger("meshward.proxy")


class SnapshotRejected(Exception):
    """The snapshot cannot be compiled; the sidecar keeps enforcing the previous one (NACK)."""

    def __init__(self, generation: int, reason: str) -> None:
        super().__init__(f"generation {generation} rejected: {reason}")
        self.generation = generation
        self.reason = reason


def workload_change(runtime: SidecarRuntime, snapshot: MeshSnapshot) -> str:
    """Why a running sidecar cannot take ``snapshot``, in terms of the resource that changed."""
    old, new = runtime.workload, snapshot.workload
    ref = f"Workload {new.namespace}/{new.name}"
    restart = "a running sidecar keeps what it started with: restart the workload to apply it"
    if (old.namespace, old.name) != (new.namespace, new.name):
        return f"the snapshot is for {ref}; this sidecar serves Workload {old.namespace}/{old.name}"
    if snapshot.trust_domain != runtime.trust_domain:
        return f"Mesh spec.trustDomain changed from {runtime.trust_domain!r} to {snapshot.trust_domain!r}"
    if old.labels != new.labels:
        return f"{ref}: metadata.labels changed from {old.labels} to {new.labels}; {restart}"
    for field, label in (("service", "spec.service"), ("service_account", "spec.serviceAccount")):
        if getattr(old, field) != getattr(new, field):
            return (
                f"{ref}: {label} changed from {getattr(old, field)!r} to {getattr(new, field)!r}; {restart}"
            )
    return f"{ref} changed; {restart}"


@dataclass(frozen=True, slots=True)
class CompiledConfig:
    snapshot: MeshSnapshot
    chain: CompiledChain
    routes: RouteTable
    mtls_mode: Literal["STRICT", "PERMISSIVE"]
    allow_any_outbound: bool
    egress: EgressSide | None = None  # external services (meshward.proxy.egress)

    @property
    def generation(self) -> int:
        return self.snapshot.generation


ChainFactory = Callable[[MeshSnapshot, SidecarRuntime], Sequence[Filter]]


def compile_snapshot(
    snapshot: MeshSnapshot,
    runtime: SidecarRuntime,
    mtls_override: Literal["STRICT", "PERMISSIVE"] | None = None,
    chain_factory: ChainFactory = build_chain,
) -> CompiledConfig:
    """Build every per-generation structure; any failure becomes :class:`SnapshotRejected`."""
    try:
        chain = CompiledChain(chain_factory(snapshot, runtime))
        routes = RouteTable(snapshot, endpoint_state(runtime))
        for skipped in routes.skipped:
            log.warning("config generation %s: skipped endpoint of %s", snapshot.generation, skipped)
        egress = compile_egress_side(snapshot, runtime)
    except Exception as exc:
        log.warning("config generation %s rejected: %s", snapshot.generation, exc)
        raise SnapshotRejected(snapshot.generation, f"{type(exc).__name__}: {exc}") from exc
    return CompiledConfig(
        snapshot,
        chain,
        routes,
        mtls_override or snapshot.mesh.mtls.mode,
        snapshot.mesh.outbound_traffic_policy.mode == "ALLOW_ANY",
        egress,
    )
