"""The inbound filter chain, built in one function that reads top-down.

The chain runs on the INBOUND side: the server's sidecar is the enforcement point (as in
Istio), because only it can be trusted to protect the model, whatever the caller runs.
Requests go through the filters in this order; responses go back through them in reverse.
"""

from __future__ import annotations

import meshward.detection.filter
import meshward.filters.authn
import meshward.filters.authz
import meshward.filters.ratelimit
import meshward.gateway.filter
import meshward.telemetry.filter
from meshward.config.snapshot import MeshSnapshot
from meshward.egress.chain import inbound_view
from meshward.filters.base import Filter, SidecarRuntime

__all__ = ["build_chain"]


def build_chain(snapshot: MeshSnapshot, runtime: SidecarRuntime) -> list[Filter]:
    """Compile ``snapshot`` into the ordered filters for one generation (raises if it cannot)."""
    snapshot = inbound_view(snapshot)  # policies annotated for egress run in the outbound chain
    chain: list[Filter | None] = []
    # Peer authentication already happened: mTLS verified the peer's SVID before any byte was
    # read. End-user authentication (JWTs, API keys) comes first: authz reads what it found,
    # and a request with a bad token is refused 401 before anything else spends effort on it.
    chain.append(meshward.filters.authn.build(snapshot, runtime))

    # gateway routing (gateways only): a request no route takes is refused 404 before any
    # policy work; the forwarded Host becomes the mesh service the gateway's outbound calls.
    chain.append(meshward.gateway.filter.build(snapshot, runtime))

    # authz: who may call which model and operation. Nothing else should spend effort
    # (or budget) on a caller that is not allowed at all.
    chain.append(meshward.filters.authz.build(snapshot, runtime))

    # ratelimit next: request rates, concurrency and token budgets of callers that ARE allowed,
    # before the (costlier) body inspection and before the model spends compute.
    chain.append(meshward.filters.ratelimit.build(snapshot, runtime))

    # dlp: inspect and rewrite prompts on the way in and outputs on the way out; after the
    # limits so a flood of denied calls is not scanned. Its detectors (phonenumbers, stdnum,
    # hyperscan: ~5 MB) are loaded only by a sidecar of a mesh that has DLP policies.
    if snapshot.of_kind("DataProtectionPolicy"):
        import meshward.filters.dlp as dlp_filter

        chain.append(dlp_filter.build(snapshot, runtime))

    # detection: per-window counts for the threat detectors (and PRADA on inference inputs); before
    # telemetry so that on the way back it sees the model's own answer, as DLP has not rewritten it.
    chain.append(meshward.detection.filter.build(snapshot, runtime))

    # telemetry last: it sees every outcome (denials of the filters above included, through
    # on_complete) and, on the response path, is the first to see the model's raw answer.
    chain.append(meshward.telemetry.filter.build(snapshot, runtime))

    return [f for f in chain if f is not None]
