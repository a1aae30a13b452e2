"""The outbound filter chain for external destinations, compiled once per config generation.

Which shared policies apply on the way OUT: a ``RateLimitPolicy`` or ``DataProtectionPolicy``
annotated ``meshward.dev/applies-to: egress`` applies to the external calls of the workloads it
selects (the callers), and only to them; without the annotation a policy protects the selected
workload's inbound side, as before (:func:`inbound_view` keeps egress policies out of the
inbound chain). So ``key: source.principal`` is the calling identity and a token budget is the
caller's spend at the provider.

Per ExternalService host, in order (responses come back in reverse):

1. egress authz — EgressPolicy rules of this workload (default deny): nothing else spends
   effort on a call that may not leave at all;
2. rate limits and token budgets (``meshward.filters.ratelimit``) — requests, concurrency,
   token budgets per caller/model, streaming usage reconciled;
3. DLP (``meshward.filters.dlp``) — prompts leaving the mesh masked or blocked, answers too;
4. token spend per identity, host and model (metrics, ``ctx.tokens`` for access log and audit);
5. credential injection — last before the wire: the filters above never see the key;
6. telemetry — metrics, access log, audit, trace, every outcome (denials included).

Undeclared hosts get a chain of telemetry alone, so their 403 is logged and audited.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import meshward.filters.ratelimit
from meshward.audit.chain import compact_json
from meshward.config.snapshot import MeshSnapshot
from meshward.egress.credentials import credential_cache
from meshward.egress.engine import EgressEngine, ExternalEntry, ExternalTable, compile_egress
from meshward.egress.filters import CredentialFilter, EgressAuthzFilter, SpendFilter, egress_metrics
from meshward.egress.tls import origination_context
from meshward.filters.base import Filter, Peer, SidecarRuntime
from meshward.resources.base import Resource
from meshward.telemetry.filter import TelemetryFilter, telemetry_enabled
from meshward.telemetry.outputs import telemetry_outputs
from meshward.telemetry.taphub import tap_hub

__all__ = ["APPLIES_TO", "EgressConfig", "compile_egress_config", "egress_view", "inbound_view"]

APPLIES_TO = "meshward.dev/applies-to"
_SHARED_KINDS = ("RateLimitPolicy", "DataProtectionPolicy")
UNREGISTERED = "unregistered"


def _is_egress(r: Resource[Any]) -> bool:
    """A rate-limit or DLP policy meant for the selected workloads' external calls."""
    return r.kind in _SHARED_KINDS and r.metadata.annotations.get(APPLIES_TO, "").strip().lower() == "egress"


def inbound_view(snapshot: MeshSnapshot) -> MeshSnapshot:
    """The snapshot without the policies that apply to egress only (the same object if none)."""
    if not any(_is_egress(r) for r in snapshot.resources):
        return snapshot
    return dataclasses.replace(snapshot, resources=tuple(r for r in snapshot.resources if not _is_egress(r)))


def egress_view(snapshot: MeshSnapshot) -> MeshSnapshot:
    """The snapshot as the egress chain's shared filters see it: egress-annotated policies only."""
    kept = tuple(r for r in snapshot.resources if _is_egress(r))
    return dataclasses.replace(snapshot, resources=kept)


class _EgressTelemetry(TelemetryFilter):
    """The telemetry filter with the external host as the destination."""

    def __init__(self, runtime: SidecarRuntime, snapshot: MeshSnapshot, host: str) -> None:
        super().__init__(telemetry_outputs(runtime), snapshot, tap_hub(runtime))
        self.destination = host
        self.destination_service = host
        self.destination_workload = host
        self._destination_json = compact_json(host)
        self._service_json = compact_json(host)


@dataclasses.dataclass(frozen=True, slots=True)
class EgressConfig:
    """Everything the outbound side needs for external calls in one generation."""

    table: ExternalTable
    engine: EgressEngine
    chains: dict[str, list[Filter]]  # host → filters (the sidecar compiles them)
    tunnels: dict[str, list[Filter]]  # host → filters of a CONNECT tunnel (telemetry only)
    unregistered: list[Filter]
    self_peer: Peer
    contexts: dict[str, Any]  # host → ssl.SSLContext (HTTPS ports) built at compile time


def _chain(
    entry: ExternalEntry,
    engine: EgressEngine,
    shared: list[Filter],
    snapshot: MeshSnapshot,
    runtime: SidecarRuntime,
    telemetry: bool,
) -> list[Filter]:
    metrics = egress_metrics(runtime)
    chain: list[Filter] = [EgressAuthzFilter(engine, entry, metrics), *shared]
    if entry.protocol == "openai":
        chain.append(SpendFilter(entry, metrics))
    if entry.secret is not None:
        chain.append(CredentialFilter(entry, credential_cache(runtime)))
    if telemetry:
        chain.append(_EgressTelemetry(runtime, snapshot, entry.host))
    return chain


def compile_egress_config(snapshot: MeshSnapshot, runtime: SidecarRuntime) -> EgressConfig:
    """Compile the egress side of ``snapshot`` (raises on a bad caBundle: the generation is NACKed)."""
    table = ExternalTable(snapshot.resources)
    w = snapshot.workload
    td = snapshot.trust_domain
    engine = compile_egress(snapshot.resources, w, snapshot.mesh.root_namespace, td)
    telemetry = telemetry_enabled()
    shared: list[Filter] = []
    chains: dict[str, list[Filter]] = {}
    tunnels: dict[str, list[Filter]] = {}
    contexts: dict[str, Any] = {}
    if len(table):
        view = egress_view(snapshot)
        limits = meshward.filters.ratelimit.build(view, runtime)
        if limits is not None:
            shared.append(limits)
        if view.of_kind("DataProtectionPolicy"):
            import meshward.filters.dlp as dlp_filter

            dlp = dlp_filter.build(view, runtime)
            if dlp is not None:
                shared.append(dlp)
        for host, entry in table.entries.items():
            chains[host] = _chain(entry, engine, shared, snapshot, runtime, telemetry)
            tunnels[host] = [_EgressTelemetry(runtime, snapshot, host)] if telemetry else []
            if any(entry.ports.values()):
                contexts[host] = origination_context(entry.ca_bundle)
    unregistered: list[Filter] = [_EgressTelemetry(runtime, snapshot, UNREGISTERED)] if telemetry else []
    spiffe = w.spiffe_id(td)
    peer = Peer("127.0.0.1", 0, spiffe, w.namespace, w.service_account)
    return EgressConfig(table, engine, chains, tunnels, unregistered, peer, contexts)
