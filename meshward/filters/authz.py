"""The authorization filter: the first filter of the inbound chain.

Compiles the snapshot's AuthorizationPolicies for the served workload once per generation
(:func:`meshward.authz.engine.engine_from_snapshot`) and decides every request in
``on_request`` from plain attributes (peer identity, method, normalized path, host, port,
headers, model and AI operation). A denial is a :class:`Denial` of kind ``authz`` (403,
``{"error": "access denied", ...}``; the caller is not told which policy said no).

``remote.ip`` / ``remoteIpBlocks`` equal the peer address: no X-Forwarded-For is trusted (Istio
with ``numTrustedProxies: 0``). Health probes and the sidecar's admin port never reach this
filter (probes go to the app directly; the admin port is its own listener).

What it records for telemetry and audit:

- ``ctx.decision``: ``allow``, ``deny`` or ``dry_run_deny`` (allowed, but the dry-run policies
  would deny); ``ctx.policy`` / ``ctx.rule`` (``ns/name``, ``rules[N]``): what decided (for
  ``dry_run_deny``: the dry-run decision), None when no policy did;
  ``ctx.scratch["authz.reason"]``: the decision in words ("no ALLOW policy matched",
  "default deny", "denied by ml/x rules[0]"); ``ctx.audit_marks``: matching AUDIT policies.
- counters, kept across generations as plain ints in the runtime's :class:`AuthzCounters`
  (``counters(runtime)``): ``{"allowed": {policy: n}, "denied": {...}, "dry_run_allowed": {...},
  "dry_run_denied": {...}}`` keyed by the deciding policy ``ns/name`` or ``"-"`` when none
  decided (default deny, no ALLOW match); the telemetry filter exports them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from meshward.ai.protocol import needs_body
from meshward.authn.enduser import EndUser
from meshward.authz.attributes import AuthzDecision, RequestAttributes
from meshward.authz.engine import AuthzEngine, engine_from_snapshot
from meshward.config.snapshot import MeshSnapshot
from meshward.filters.base import Denial, Filter, RequestContext, SidecarRuntime

__all__ = [
    "AuthzCounters",
    "AuthzFilter",
    "attributes_of",
    "build",
    "counters",
    "end_user_attributes",
]

_OUTCOMES = ("allowed", "denied", "dry_run_allowed", "dry_run_denied")


class AuthzCounters(dict[str, dict[str, int]]):
    """Decisions per outcome and deciding policy, for the whole process: ``{outcome: {policy: n}}``."""

    def __init__(self) -> None:
        super().__init__((outcome, {}) for outcome in _OUTCOMES)


def counters(runtime: SidecarRuntime) -> AuthzCounters:
    """The per-policy decision counters of this sidecar (created on first use)."""
    return runtime.service(AuthzCounters)


def build(snapshot: MeshSnapshot, runtime: SidecarRuntime) -> Filter | None:
    """The filter for this generation; None only when nothing can be denied (no policy at all
    and ``defaultPolicy: allow``)."""
    engine = engine_from_snapshot(snapshot)
    if not engine.policies and snapshot.mesh.default_policy == "allow":
        return None
    return AuthzFilter(engine, counters(runtime))


class AuthzFilter(Filter):
    name = "authz"
    eager_safe = True  # pure policy evaluation, never waits

    def __init__(
        self, engine: AuthzEngine, counts: AuthzCounters, clock: Callable[[], float] = time.time
    ) -> None:
        self.engine = engine
        self._clock = clock
        self._allowed = counts.setdefault("allowed", {})
        self._denied = counts.setdefault("denied", {})
        self._dry_allowed = counts.setdefault("dry_run_allowed", {})
        self._dry_denied = counts.setdefault("dry_run_denied", {})

    def wants_request_body(self, ctx: RequestContext) -> bool:
        """Only when a policy looks at the model and the model is in the (JSON) body."""
        return self.engine.uses_model and needs_body(ctx.ai, ctx.method, ctx.headers)

    async def on_request(self, ctx: RequestContext) -> Denial | None:
        decision = self.engine.evaluate(attributes_of(ctx, self._clock()))
        return self.record(ctx, decision)

    def record(self, ctx: RequestContext, decision: AuthzDecision) -> Denial | None:
        """Write the decision into ``ctx`` and the counters; the Denial if it denies."""
        shadow = decision.dry_run
        shown = shadow if shadow is not None and decision.allowed and not shadow.allowed else decision
        ctx.policy = shown.policy
        ctx.rule = shown.rule_ref
        ctx.scratch["authz.reason"] = shown.reason
        if decision.audit:
            ctx.audit_marks.extend(decision.audit)
        if shadow is not None:
            bucket = self._dry_allowed if shadow.allowed else self._dry_denied
            key = shadow.policy or "-"
            bucket[key] = bucket.get(key, 0) + 1
        key = decision.policy or "-"
        if decision.allowed:
            self._allowed[key] = self._allowed.get(key, 0) + 1
            ctx.decision = "allow" if shown is decision else "dry_run_deny"
            return None
        self._denied[key] = self._denied.get(key, 0) + 1
        ctx.decision = "deny"
        return Denial(
            kind="authz",
            status=403,
            message="access denied",
            policy=decision.policy,
            rule=decision.rule_ref,
            reason=decision.reason,
        )


def attributes_of(ctx: RequestContext, now: float) -> RequestAttributes:
    """What policies see of a request."""
    peer = ctx.peer
    principal = peer.principal
    namespace = peer.namespace
    if namespace is None and principal is not None:
        parts = principal.split("/")  # td/ns/NS/sa/SA
        if len(parts) == 5 and parts[1] == "ns":
            namespace = parts[2]
    user = ctx.end_user
    # Fields named one by one (no ``**``): compiled, that keeps it a direct call.
    return RequestAttributes(
        method=ctx.method,
        path=ctx.path,
        host=ctx.host,
        port=ctx.destination_port,
        principal=principal,
        namespace=namespace,
        source_ip=peer.ip,
        headers=ctx.headers,
        model=ctx.ai.model,
        operation=ctx.ai.operation,
        now=now,
        request_principal=user.principal if user is not None else None,
        auth_audiences=user.audiences if user is not None else (),
        auth_presenter=user.presenter if user is not None else None,
        auth_claims=user.claims if user is not None else {},
    )


def end_user_attributes(user: EndUser | None) -> dict[str, Any]:
    """The ``request.auth.*`` attributes of an authenticated end user (none: all absent)."""
    if user is None:
        return {}
    return {
        "request_principal": user.principal,
        "auth_audiences": user.audiences,
        "auth_presenter": user.presenter,
        "auth_claims": user.claims,
    }
