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
from meshward.proxy.routes import RouteTable

__all__ = ["ChainFactory", "CompiledChain", "CompiledConfig", "SnapshotRejected", "compile_snapshot"]

log = logging.getLogger("meshward.proxy")


class SnapshotRejected(Exception):
    """The snapshot cannot be compiled; the sidecar keeps enforcing the previous one (NACK)."""

    def __init__(self, generation: int, reason: str) -> None:
        super().__init__(f"generation {generation} rejected: {reason}")
        self.generation = generation
        self.reason = reason


def _overrides(f: Filter, hook: str) -> bool:
    return getattr(type(f), hook) is not getattr(Filter, hook)


class CompiledChain:
    """The ordered filters plus, per hook, only the filters that implement it."""

    __slots__ = ("body", "chunk", "complete", "eager", "filters", "headers", "requests")

    def __init__(self, filters: Sequence[Filter]) -> None:
        self.filters = tuple(filters)
        self.body = tuple(f for f in filters if _overrides(f, "wants_request_body"))
        self.requests = tuple(f for f in filters if _overrides(f, "on_request"))
        rev = tuple(reversed(self.filters))
        self.headers = tuple(f for f in rev if _overrides(f, "on_response_headers"))
        self.chunk = tuple(
            f for f in rev if _overrides(f, "on_response_chunk") or _overrides(f, "on_response_end")
        )
        self.complete = tuple(f for f in rev if _overrides(f, "on_complete"))
        # Requests may run inline (no Task per request) when no filter needs one up front.
        self.eager = all(f.eager_safe for f in self.requests)

    def __len__(self) -> int:
        return len(self.filters)


@dataclass(frozen=True, slots=True)
class CompiledConfig:
    snapshot: MeshSnapshot
    chain: CompiledChain
    routes: RouteTable
    mtls_mode: Literal["STRICT", "PERMISSIVE"]
    allow_any_outbound: bool

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
        routes = RouteTable(snapshot)
        for skipped in routes.skipped:
            log.warning("config generation %s: skipped endpoint of %s", snapshot.generation, skipped)
    except Exception as exc:
        log.warning("config generation %s rejected: %s", snapshot.generation, exc)
        raise SnapshotRejected(snapshot.generation, f"{type(exc).__name__}: {exc}") from exc
    return CompiledConfig(
        snapshot,
        chain,
        routes,
        mtls_override or snapshot.mesh.mtls.mode,
        snapshot.mesh.outbound_traffic_policy.mode == "ALLOW_ANY",
    )
