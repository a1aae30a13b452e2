"""Replaying observed requests through the authorization engine (the proof of a suggestion).

:func:`engines_for` compiles, with :mod:`meshward.authz.engine`, the policies each workload of
a service would enforce; :func:`decide` gives an observed request the decision those policies
would give it (every workload of the service must allow, as ``meshward check`` requires).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from meshward.authz.attributes import AuthzDecision, RequestAttributes
from meshward.authz.engine import AuthzEngine, compile_engine
from meshward.identity.spiffe import InvalidSpiffeId, SpiffeId
from meshward.resources.base import Resource
from meshward.resources.mesh import MeshSpec
from meshward.review.data import ObservedRequest, principal_of
from meshward.review.topology import Service

__all__ = ["attributes", "decide", "engines_for"]


def engines_for(
    service: Service, resources: Iterable[Resource[Any]], mesh: MeshSpec, trust_domain: str
) -> list[AuthzEngine]:
    policies = list(resources)
    return [
        compile_engine(
            policies,
            info,
            trust_domain=trust_domain,
            root_namespace=mesh.root_namespace,
            default_policy=mesh.default_policy,
        )
        for info in service.infos()
    ]


def attributes(request: ObservedRequest) -> RequestAttributes:
    """What the serving sidecar's policies saw of ``request`` (as far as the audit tells)."""
    principal, namespace = _caller(request.source)
    return RequestAttributes(
        method=request.method,
        path=request.path,
        host=request.host,
        principal=principal,
        namespace=namespace,
        model=request.model,
        operation=request.operation,
        now=request.time_ms / 1000,
    )


def _caller(source: str | None) -> tuple[str | None, str | None]:
    """The caller's principal (Istio form) and namespace; (None, None) for plaintext."""
    if source is None:
        return None, None
    try:
        caller = SpiffeId.from_uri(source)
    except InvalidSpiffeId:
        return principal_of(source), None
    return caller.principal, caller.namespace


def decide(engines: list[AuthzEngine], request: ObservedRequest) -> AuthzDecision:
    """Allowed only if every workload's engine allows; else the first denial."""
    attrs = attributes(request)
    decisions = [engine.evaluate(attrs) for engine in engines]
    denied = [d for d in decisions if not d.allowed]
    if denied:
        return denied[0]
    return decisions[0] if decisions else AuthzDecision(False, "no workload serves the service")
