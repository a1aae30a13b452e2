"""``meshward review``: a periodic access review of policies against observed traffic (pure).

Over a window of audited requests it reports: each rule's use (matches, callers, last use);
ALLOW rules never used (``unusedGrants``); rules broader than their use (``broadRules``: a
wildcard or absent principal, namespace, path or model where one value was seen); each
identity's certificates and traffic and the ``staleIdentities`` with none in the window;
``denials`` by identity; dry-run policies that would have denied real traffic; rules shadowed
by others (``shadowedPolicies``: an ALLOW a DENY always beats, or a rule another one of the
same action already covers) and DENYs that never fire; least-privilege suggestions per service
proved against the observed traffic with the authz engine; DLP findings and alerts; certificate
and CA expiry; and the compliance mapping. Every list is sorted: same data, same report.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from typing import Any

from meshward.authz.engine import AuthzEngine
from meshward.resources.authorization import AuthorizationPolicy
from meshward.resources.dataprotection import DataProtectionPolicy
from meshward.resources.loader import load_text
from meshward.resources.ratelimit import RateLimitPolicy
from meshward.review.compliance import Controls, map_controls
from meshward.review.coverage import rule_covers
from meshward.review.data import MeshData, ObservedRequest, Window, iso_ms, principal_of
from meshward.review.evaluate import decide, engines_for
from meshward.review.findings import Finding, sort_findings
from meshward.review.inventory import identity_index, is_model_service, rule_allows_any_caller
from meshward.review.suggest import path_template, suggest_policy
from meshward.review.topology import PolicyRule, Service, applicable, policy_name, rules_of, services

__all__ = ["common_labels", "review", "suggestion_for"]

_EXPIRY_WARN_DAYS = 30
_PERSISTENT_DENIALS = 3


def _parse_iso(text: str) -> int:
    return int(dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)


def _workload_names(data: MeshData, rule: PolicyRule, all_services: list[Service]) -> set[str]:
    """``ns/name`` of the workloads the rule's policy selects."""
    out = set()
    for s in all_services:
        if any(policy_name(p) == rule.name for p in applicable(data, s, AuthorizationPolicy)):
            out |= {f"{w.metadata.namespace}/{w.metadata.name}" for w in s.workloads}
    return out


def _usage(data: MeshData, requests: list[ObservedRequest]) -> dict[tuple[str, int], list[ObservedRequest]]:
    """The requests each rule decided, by (policy, rule index).

    A ``dry_run_deny`` record names the dry-run policy that would have denied; the enforced
    rule that allowed it is found by replaying the request through the current policies."""
    out: dict[tuple[str, int], list[ObservedRequest]] = {}
    engines: dict[str, list[AuthzEngine]] = {}
    by_identity = {identity: s for s in services(data) for identity in s.identities}
    for r in requests:
        if r.policy is not None and r.rule is not None:
            out.setdefault((r.policy, r.rule), []).append(r)
        service = by_identity.get(r.destination)
        if r.decision == "dry_run_deny" and service is not None:
            if service.ref not in engines:
                engines[service.ref] = engines_for(service, data.resources, data.mesh, data.trust_domain)
            enforced = decide(engines[service.ref], r)
            if enforced.allowed and enforced.policy is not None and enforced.rule is not None:
                out.setdefault((enforced.policy, enforced.rule), []).append(r)
    return out


def _is_wild(value: str) -> bool:
    return "*" in value or "{" in value


def _broad(rule: PolicyRule, used: list[ObservedRequest]) -> list[dict[str, Any]]:
    """Dimensions the rule leaves open (absent or wildcard) where at most one value was seen."""
    out: list[dict[str, Any]] = []
    spec = rule.rule

    def add(field: str, allowed: str, seen: set[str]) -> None:
        if len(seen) <= 1:
            out.append(
                {
                    "policy": rule.name,
                    "rule": rule.index,
                    "field": field,
                    "allows": allowed,
                    "seen": sorted(seen),
                    "message": f"{rule.ref} allows {field} {allowed} but only {', '.join(sorted(seen)) or 'none'} was seen",
                }
            )

    callers = {principal_of(r.source) if r.source else "plaintext" for r in used}
    if rule_allows_any_caller(spec):
        add("principals", "any caller", callers)
    else:
        wild = sorted({p for f in spec.from_ for p in f.source.principals if _is_wild(p)})
        if wild:
            add("principals", ", ".join(wild), callers)
    namespaces = sorted({n for f in spec.from_ for n in f.source.namespaces if _is_wild(n)})
    if namespaces:
        add("namespaces", ", ".join(namespaces), {c.split("/")[2] for c in callers if c.count("/") == 4})
    paths = sorted({p for t in spec.to for p in t.operation.paths if _is_wild(p)})
    if paths:
        add("paths", ", ".join(paths), {r.path for r in used})
    models = sorted({m for t in spec.to for m in t.operation.models if _is_wild(m)})
    if models:
        add("models", ", ".join(models), {r.model for r in used if r.model})
    return out


def _shadowed(data: MeshData, rules: list[PolicyRule], all_services: list[Service]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    enforced = [r for r in rules if not r.dry_run and r.action in ("ALLOW", "DENY")]
    scope = {r.ref: _workload_names(data, r, all_services) for r in enforced}
    order = {r.ref: i for i, r in enumerate(enforced)}
    for b in enforced:
        if not scope[b.ref]:
            continue
        for a in enforced:
            if a is b or not scope[a.ref] >= scope[b.ref]:
                continue
            if a.action == "ALLOW" and b.action == "DENY":
                continue
            if not rule_covers(a.rule, b.rule, data.trust_domain):
                continue
            mutual = a.action == b.action and rule_covers(b.rule, a.rule, data.trust_domain)
            if mutual and order[a.ref] > order[b.ref]:
                continue  # equal rules: the later one is reported
            if a.action == "DENY" and b.action == "ALLOW":
                why = f"{b.ref} can never allow: {a.ref} denies everything it matches"
            else:
                why = f"{b.ref} is redundant: {a.ref} already matches everything it matches"
            out.append(
                {"policy": b.name, "rule": b.index, "action": b.action, "shadowedBy": a.ref, "message": why}
            )
            break
    return out


def suggestion_for(
    data: MeshData,
    service: Service,
    requests: list[ObservedRequest],
    *,
    dry_run: bool = False,
    include_denied: bool = False,
) -> dict[str, Any]:
    """The least-privilege policy for ``service`` from its allowed ``requests``, with a preview:
    how the observed traffic fares when it replaces the service's own ALLOW policies.

    ``include_denied``: also requests denied only because no ALLOW policy matched (a service
    with no policy yet under default deny), never those an explicit DENY refused."""
    ids = set(service.identities)
    served = [r for r in requests if r.destination in ids]
    allowed = [
        r
        for r in served
        if r.decision in ("allow", "dry_run_deny")
        or (include_denied and r.decision == "deny" and r.policy is None)
    ]
    labels = common_labels(service)
    doc = suggest_policy(
        allowed,
        name=f"{service.name}-least-privilege",
        namespace=service.namespace,
        match_labels=labels,
        dry_run=dry_run,
    )
    policy = load_text(_yaml(doc), "<suggestion>")
    own = {
        policy_name(p)
        for p in applicable(data, service, AuthorizationPolicy)
        if p.spec.action == "ALLOW" and not p.dry_run and _only_selects(data, p, service)
    }
    kept = [r for r in data.resources if not (isinstance(r, AuthorizationPolicy) and policy_name(r) in own)]
    engines = engines_for(service, [*kept, *policy], data.mesh, data.trust_domain)
    would_deny: Counter[tuple[str, str, str]] = Counter()
    kept_working = 0
    allowed_ids = {id(r) for r in allowed}
    for r in served:
        if decide(engines, r).allowed:
            kept_working += id(r) in allowed_ids
        else:
            would_deny[(principal_of(r.source) if r.source else "plaintext", r.method, r.path)] += 1
    return {
        "service": service.ref,
        "selector": labels,
        "replaces": sorted(own),
        "policy": doc,
        "observedAllowed": len(allowed),
        "stillAllowed": kept_working,
        "wouldDeny": [
            {"identity": who, "method": m, "path": p, "requests": n}
            for (who, m, p), n in sorted(would_deny.items())
        ],
    }


def _yaml(doc: dict[str, Any]) -> str:
    import yaml

    return str(yaml.safe_dump(doc, sort_keys=False))


def common_labels(service: Service) -> dict[str, str]:
    """The selector for a service's workloads: their shared ``app`` label if they have one
    (versions come and go), else every label they share."""
    sets = [set(w.metadata.labels.items()) for w in service.workloads]
    common = set.intersection(*sets) if sets else set()
    apps = [(k, v) for k, v in common if k == "app"]
    return dict(sorted(apps or common))


def _only_selects(data: MeshData, policy: AuthorizationPolicy, service: Service) -> bool:
    """Does ``policy`` select workloads of ``service`` only?"""
    return all(
        s.ref == service.ref
        or all(policy_name(p) != policy_name(policy) for p in applicable(data, s, AuthorizationPolicy))
        for s in services(data)
    )


def _identities(data: MeshData, requests: list[ObservedRequest], window: Window) -> list[dict[str, Any]]:
    root = f"/ns/{data.mesh.root_namespace}/"
    certs: dict[str, list[str]] = {}
    for c in data.certificates:
        certs.setdefault(c.identity, []).append(c.issued_at)
    made = Counter(r.source for r in requests if r.source)
    served = Counter(r.destination for r in requests)
    last: dict[str, int] = {}
    for r in requests:
        for who in (r.source, r.destination):
            if who:
                last[who] = max(last.get(who, 0), r.time_ms)
    everyone = (set(certs) | set(made) | set(served)) - {""}
    out = []
    for who in sorted(everyone):
        if root in who:
            continue  # the operator and the control plane
        issued = sorted(certs.get(who, []))
        out.append(
            {
                "identity": who,
                "certificates": len(issued),
                "lastIssued": issued[-1] if issued else None,
                "requestsMade": made.get(who, 0),
                "requestsServed": served.get(who, 0),
                "lastSeen": iso_ms(last[who]) if who in last else None,
            }
        )
    return out


def _rule_sections(
    data: MeshData, requests: list[ObservedRequest], audited_allowed: bool, findings: list[Finding]
) -> dict[str, list[dict[str, Any]]]:
    usage = _usage(data, requests)
    docs: list[dict[str, Any]] = []
    unused: list[dict[str, Any]] = []
    broad: list[dict[str, Any]] = []
    unused_denies: list[dict[str, Any]] = []
    for rule in rules_of(data):
        if rule.action == "AUDIT":
            continue
        used = usage.get((rule.name, rule.index), [])
        docs.append(
            {
                "policy": rule.name,
                "rule": rule.index,
                "action": rule.action,
                "dryRun": rule.dry_run,
                "matches": len(used),
                "callers": sorted({principal_of(r.source) if r.source else "plaintext" for r in used}),
                "lastUsed": iso_ms(max(r.time_ms for r in used)) if used else None,
            }
        )
        if rule.dry_run:
            continue
        where = f"AuthorizationPolicy {rule.name}"
        if rule.action == "ALLOW" and not used and audited_allowed:
            unused.append(
                {
                    "policy": rule.name,
                    "rule": rule.index,
                    "message": f"{rule.ref} allowed nothing in the window",
                }
            )
            findings.append(
                Finding("medium", rule.ref, "ALLOW rule never used in the window", where, "unused-grant")
            )
        if rule.action == "DENY" and not used:
            unused_denies.append(
                {
                    "policy": rule.name,
                    "rule": rule.index,
                    "message": f"{rule.ref} denied nothing in the window",
                }
            )
            findings.append(
                Finding("info", rule.ref, "DENY rule never fired in the window", where, "deny-never-fires")
            )
        if rule.action == "ALLOW" and used:
            for b in _broad(rule, used):
                broad.append(b)
                findings.append(Finding("medium", rule.ref, b["message"], where, "broad-rule"))
    return {"rules": docs, "unusedGrants": unused, "broadRules": broad, "unusedDenies": unused_denies}


def _traffic_sections(
    data: MeshData, requests: list[ObservedRequest], index: dict[str, str], findings: list[Finding]
) -> dict[str, list[dict[str, Any]]]:
    DenialKey = tuple[str, str, str, str, str]
    denials: Counter[DenialKey] = Counter()
    denial_last: dict[DenialKey, int] = {}
    dry: dict[tuple[str, int], list[ObservedRequest]] = {}
    dlp: Counter[tuple[str, str]] = Counter()
    for r in requests:
        service = index.get(r.destination, principal_of(r.destination))
        if r.decision == "deny":
            who = principal_of(r.source) if r.source else "plaintext"
            key = (who, service, r.method, path_template(r.path, r.model), r.reason or (r.policy or ""))
            denials[key] += 1
            denial_last[key] = max(denial_last.get(key, 0), r.time_ms)
        if r.decision == "dry_run_deny" and r.policy is not None:
            dry.setdefault((r.policy, r.rule if r.rule is not None else -1), []).append(r)
        for detector, n in r.dlp_findings:
            dlp[(service, detector)] += n
    denial_docs = [
        {
            "identity": k[0],
            "service": k[1],
            "method": k[2],
            "path": k[3],
            "reason": k[4],
            "requests": n,
            "lastSeen": iso_ms(denial_last[k]),
        }
        for k, n in sorted(denials.items())
    ]
    per_identity: Counter[str] = Counter()
    for k, n in denials.items():
        per_identity[k[0]] += n
    for who, n in sorted(per_identity.items()):
        if n >= _PERSISTENT_DENIALS:
            findings.append(
                Finding(
                    "medium",
                    who,
                    f"{n} denied requests in the window: keeps trying what it may not do",
                    "investigate the caller",
                    "repeated-denials",
                )
            )
    dry_docs = []
    for (policy, rule_index), hits in sorted(dry.items()):
        callers = sorted({principal_of(r.source) if r.source else "plaintext" for r in hits})
        dry_docs.append(
            {
                "policy": policy,
                "rule": rule_index if rule_index >= 0 else None,
                "requests": len(hits),
                "callers": callers,
            }
        )
        message = f"dry-run policy would have denied {len(hits)} real request(s) from {', '.join(callers)}"
        findings.append(
            Finding("medium", policy, message, f"AuthorizationPolicy {policy}", "dry-run-would-deny")
        )
    return {
        "denials": denial_docs,
        "dryRunDenials": dry_docs,
        "dlpFindings": [
            {"service": svc, "detector": det, "count": n} for (svc, det), n in sorted(dlp.items())
        ],
    }


def _expiry_sections(
    data: MeshData, window: Window, findings: list[Finding]
) -> dict[str, list[dict[str, Any]]]:
    expiry = []
    for ca in data.ca:
        days = (_parse_iso(ca.not_after) - window.end_ms) / 86_400_000
        if days < _EXPIRY_WARN_DAYS:
            severity = "critical" if days < 0 else "high" if days < 7 else "medium"
            expiry.append(
                {
                    "subject": ca.name,
                    "notAfter": ca.not_after,
                    "daysLeft": round(days, 1),
                    "severity": severity,
                }
            )
            findings.append(
                Finding(
                    severity, f"CA {ca.name}", f"expires {ca.not_after}", "meshward ca rotate", "ca-expiry"
                )
            )
    live: dict[str, str] = {}
    for cert in data.certificates:
        if not cert.revoked and _parse_iso(cert.not_after) > window.end_ms:
            live[cert.identity] = max(live.get(cert.identity, ""), cert.not_after)
    return {
        "expiry": expiry,
        "certificates": [{"identity": who, "notAfter": na} for who, na in sorted(live.items())],
    }


def _compliance(data: MeshData, requests: list[ObservedRequest], signed_audit: bool) -> list[dict[str, Any]]:
    out = []
    for s in services(data):
        ids = set(s.identities)
        served = [r for r in requests if r.destination in ids]
        if not is_model_service(served):
            continue
        authz = [p for p in applicable(data, s, AuthorizationPolicy) if not p.dry_run]
        allows = [rule for p in authz if p.spec.action == "ALLOW" for rule in p.spec.rules]
        controls = Controls(
            mtls_strict=data.mesh.mtls.mode == "STRICT",
            authorization=tuple(policy_name(p) for p in authz),
            allows_any_caller=any(rule_allows_any_caller(rule) for rule in allows),
            data_protection=tuple(policy_name(p) for p in applicable(data, s, DataProtectionPolicy)),
            rate_limits=tuple(policy_name(p) for p in applicable(data, s, RateLimitPolicy)),
            audited=bool(served),
            audit_signed=signed_audit,
            reviewed=True,
        )
        models = sorted({r.model for r in served if r.model})
        out.append({"service": s.ref, "models": models, "controls": map_controls(controls)})
    return out


def _stale(identities: list[dict[str, Any]], findings: list[Finding]) -> list[dict[str, Any]]:
    stale = []
    for ident in identities:
        if ident["certificates"] and not ident["requestsMade"] and not ident["requestsServed"]:
            who = ident["identity"]
            stale.append(
                {**ident, "message": f"{who} holds certificates but made or served no request in the window"}
            )
            findings.append(
                Finding(
                    "low",
                    who,
                    "stale identity: certificates issued, no traffic in the window",
                    "meshward certs revoke, or remove its Workload",
                    "stale-identity",
                )
            )
    return stale


def review(data: MeshData, window: Window, *, signed_audit: bool = False) -> dict[str, Any]:
    """The access review document (``meshward review --json``)."""
    requests = data.in_window(window)
    all_services = services(data)
    index = identity_index(all_services)
    audited_allowed = data.mesh.audit.record_allowed or any(r.decision == "allow" for r in requests)
    findings: list[Finding] = []
    rule_sections = _rule_sections(data, requests, audited_allowed, findings)
    shadowed = _shadowed(data, list(rules_of(data)), all_services)
    for s in shadowed:
        severity = "medium" if "never allow" in s["message"] else "low"
        ref = f"{s['policy']} rules[{s['rule']}]"
        findings.append(
            Finding(severity, ref, s["message"], f"AuthorizationPolicy {s['policy']}", "shadowed")
        )
    identities = _identities(data, requests, window)
    stale = _stale(identities, findings)
    traffic = _traffic_sections(data, requests, index, findings)
    suggestions = [
        suggestion_for(data, s, requests)
        for s in all_services
        if common_labels(s)
        and any(r.destination in s.identities and r.decision in ("allow", "dry_run_deny") for r in requests)
    ]
    expiry = _expiry_sections(data, window, findings)
    alerts = [a for a in data.alerts if window.holds(a.time_ms)]
    findings += [Finding(a.severity, a.subject, a.message, "", f"alert:{a.source}") for a in alerts]
    return {
        "kind": "AccessReview",
        "trustDomain": data.trust_domain,
        "window": window.to_json(),
        "coverage": {"requests": len(requests), "allowedRequestsAudited": audited_allowed},
        **rule_sections,
        "shadowedPolicies": shadowed,
        "identities": identities,
        "staleIdentities": stale,
        **traffic,
        "suggestions": suggestions,
        "alerts": [
            {
                "time": iso_ms(a.time_ms),
                "severity": a.severity,
                "subject": a.subject,
                "message": a.message,
                "source": a.source,
            }
            for a in alerts
        ],
        **expiry,
        "compliance": _compliance(data, requests, signed_audit),
        "findings": [f.to_json() for f in sort_findings(findings)],
    }
