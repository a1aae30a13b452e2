"""``meshward discover``: what the mesh serves, who talks to whom, and what is exposed (pure).

For every service: its identity, what it serves (protocols, models and AI operations seen),
its callers and callees with volumes, and its exposure — the mTLS mode, plaintext requests
seen, the policies selecting it, whether default deny holds, whether any caller is allowed,
and the DLP and rate-limit policies in force. Each gap is a :class:`Finding` naming the
resource that would close it.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Final

from meshward.ai.protocol import classify
from meshward.resources.authorization import AuthorizationPolicy, Rule
from meshward.resources.dataprotection import DataProtectionPolicy
from meshward.resources.mesh import Mesh
from meshward.resources.ratelimit import RateLimitPolicy
from meshward.review.data import MeshData, ObservedRequest, Window, iso_ms, principal_of
from meshward.review.findings import Finding, sort_findings
from meshward.review.topology import Service, applicable, policy_name, services

__all__ = ["MODEL_OPERATIONS", "discover", "identity_index", "is_model_service", "rule_allows_any_caller"]

MODEL_OPERATIONS: Final = frozenset({"infer", "chat", "completion", "embed"})


def identity_index(all_services: list[Service]) -> dict[str, str]:
    """SPIFFE URI → ``service.namespace`` of the service it serves (first by name)."""
    out: dict[str, str] = {}
    for s in all_services:
        for identity in s.identities:
            out.setdefault(identity, s.ref)
    return out


def rule_allows_any_caller(rule: Rule) -> bool:
    """No source constraint that names callers: anyone (any identity, or none) matches."""
    if not rule.from_:
        return True
    for f in rule.from_:
        s = f.source
        named = [p for p in s.principals if p != "*"] or [n for n in s.namespaces if n != "*"]
        if not named and not s.ip_blocks and not s.remote_ip_blocks:
            return True
    return False


def is_model_service(requests: list[ObservedRequest]) -> bool:
    return any(r.model or r.operation in MODEL_OPERATIONS for r in requests)


def _mesh_name(data: MeshData) -> str:
    return next((r.metadata.name for r in data.resources if isinstance(r, Mesh)), "mesh")


def _service_doc(
    data: MeshData,
    service: Service,
    served: list[ObservedRequest],
    made: list[ObservedRequest],
    index: dict[str, str],
) -> dict[str, Any]:
    authz = applicable(data, service, AuthorizationPolicy)
    enforced = [p for p in authz if not p.dry_run]
    allows = [p for p in enforced if p.spec.action == "ALLOW"]
    dlp = applicable(data, service, DataProtectionPolicy)
    limits = applicable(data, service, RateLimitPolicy)
    any_caller = sorted(
        f"{policy_name(p)} rules[{i}]"
        for p in allows
        for i, rule in enumerate(p.spec.rules)
        if rule_allows_any_caller(rule)
    )
    default_deny = bool(allows) or data.mesh.default_policy == "deny"
    plaintext = sum(1 for r in served if r.source is None)
    callers: dict[str, Counter[str]] = {}
    last: dict[str, int] = {}
    for r in served:
        who = r.source or "plaintext"
        counts = callers.setdefault(who, Counter())
        counts["requests"] += 1
        counts["denied" if r.decision == "deny" else "allowed"] += 1
        last[who] = max(last.get(who, 0), r.time_ms)
    callees = Counter(index.get(r.destination, r.destination) for r in made)
    models = sorted({r.model for r in served if r.model})
    operations = sorted({r.operation for r in served})
    protocols = sorted({classify(r.method, r.path, {}, None).protocol for r in served})
    model = is_model_service(served)
    subject = service.ref
    findings: list[Finding] = []
    mtls = data.mesh.mtls.mode
    mesh_ref = f"Mesh {_mesh_name(data)}: spec.mtls.mode: STRICT"
    if mtls == "PERMISSIVE":
        findings.append(
            Finding(
                "high",
                subject,
                "mTLS is PERMISSIVE: plaintext callers without an identity are accepted",
                mesh_ref,
                "mtls-permissive",
            )
        )
    if plaintext:
        findings.append(
            Finding("high", subject, f"{plaintext} plaintext request(s) seen", mesh_ref, "plaintext-seen")
        )
    suggest = f"AuthorizationPolicy for {subject} (meshward policy suggest --for {subject})"
    if not enforced:
        if data.mesh.default_policy == "allow":
            findings.append(
                Finding(
                    "critical",
                    subject,
                    "no AuthorizationPolicy and defaultPolicy allow: any caller is allowed",
                    suggest,
                    "no-policy",
                )
            )
        else:
            findings.append(
                Finding(
                    "medium",
                    subject,
                    "no AuthorizationPolicy selects it: only default deny protects it",
                    suggest,
                    "no-policy",
                )
            )
    if any_caller:
        findings.append(
            Finding(
                "high", subject, f"allows any caller: {', '.join(any_caller)}", suggest, "allows-any-caller"
            )
        )
    if authz and not enforced:
        findings.append(Finding("low", subject, "only dry-run policies select it", suggest, "dry-run-only"))
    if model and not dlp:
        findings.append(
            Finding(
                "medium",
                subject,
                "serves a model without a DataProtectionPolicy (OWASP LLM02)",
                f"DataProtectionPolicy for {subject}",
                "no-dlp",
            )
        )
    if model and not limits:
        findings.append(
            Finding(
                "medium",
                subject,
                "serves a model without a RateLimitPolicy (OWASP LLM10)",
                f"RateLimitPolicy for {subject}",
                "no-limits",
            )
        )
    return {
        "service": service.name,
        "namespace": service.namespace,
        "identity": service.identities[0] if service.identities else "",
        "identities": list(service.identities),
        "workloads": [w.metadata.name for w in service.workloads],
        "labels": dict(sorted(service.workloads[0].metadata.labels.items())) if service.workloads else {},
        "servesModel": model,
        "protocols": protocols,
        "models": models,
        "operations": operations,
        "requests": len(served),
        "callers": [
            {
                "identity": who,
                "requests": counts["requests"],
                "allowed": counts["allowed"],
                "denied": counts["denied"],
                "lastSeen": iso_ms(last[who]),
            }
            for who, counts in sorted(callers.items())
        ],
        "callees": [{"service": ref, "requests": n} for ref, n in sorted(callees.items())],
        "exposure": {
            "mtls": mtls,
            "plaintextRequests": plaintext,
            "authorizationPolicies": [policy_name(p) for p in authz],
            "dryRunPolicies": [policy_name(p) for p in authz if p.dry_run],
            "defaultDeny": default_deny,
            "allowsAnyCaller": bool(any_caller),
            "dataProtection": [policy_name(p) for p in dlp],
            "rateLimits": [policy_name(p) for p in limits],
        },
        "findings": [f.to_json() for f in sort_findings(findings)],
    }


def discover(data: MeshData, window: Window) -> dict[str, Any]:
    """The inventory document (``meshward discover --json``)."""
    all_services = services(data)
    index = identity_index(all_services)
    requests = data.in_window(window)
    docs = []
    for s in all_services:
        ids = set(s.identities)
        served = [r for r in requests if r.destination in ids]
        made = [r for r in requests if r.source in ids]
        docs.append(_service_doc(data, s, served, made, index))
    mesh_findings: list[Finding] = []
    if data.mesh.default_policy == "allow":
        mesh_findings.append(
            Finding(
                "critical",
                "mesh",
                "defaultPolicy allow: services without a policy accept every caller",
                f"Mesh {_mesh_name(data)}: spec.defaultPolicy: deny",
                "default-allow",
            )
        )
    if not data.mesh.audit.record_allowed:
        mesh_findings.append(
            Finding(
                "info",
                "mesh",
                "allowed requests are not audited: callers and rule use are seen from denials only",
                f"Mesh {_mesh_name(data)}: spec.audit.recordAllowed: true",
                "allowed-not-audited",
            )
        )
    for uri in sorted({r.destination for r in requests} - set(index)):
        mesh_findings.append(
            Finding(
                "low",
                principal_of(uri),
                "serves traffic but is not declared as a Workload",
                "Workload",
                "undeclared",
            )
        )
    every = [Finding(**f) for d in docs for f in d["findings"]] + mesh_findings
    return {
        "kind": "Discovery",
        "trustDomain": data.trust_domain,
        "window": window.to_json(),
        "mesh": {"mtls": data.mesh.mtls.mode, "defaultPolicy": data.mesh.default_policy},
        "services": docs,
        "findings": [f.to_json() for f in sort_findings(every)],
    }
