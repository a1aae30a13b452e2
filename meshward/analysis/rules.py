"""The analysis rules: each a pure function of the resource set, returning findings.

=====  ========  ===========================================================================
code   level     what
=====  ========  ===========================================================================
MW001  warning   a policy's selector matches no Workload of its namespace
MW002  warning   a policy lives in a namespace where no Workload runs
MW003  warning   a principal in another trust domain (not in ``Mesh.spec.trustDomainAliases``)
MW004  warning   a lower-case or unknown HTTP method (the sidecar refuses lower-case methods
                 before any policy runs, so such a value never matches)
MW005  warning   ``requestPrincipals`` with no RequestAuthentication in force
MW006  warning   a DENY policy that can never match
MW007  warning   an ALLOW policy with a rule that allows every request
=====  ========  ===========================================================================

Rules about Workloads (MW001, MW002) only run when the set has Workloads: a policy-only file
checked alone says nothing about where it will be applied.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from meshward.analysis.findings import Finding
from meshward.authz.aliases import principal_trust_domain
from meshward.resources.authorization import AuthorizationPolicy, Rule
from meshward.resources.base import Resource
from meshward.resources.mesh import Mesh, MeshSpec, Workload

__all__ = ["HTTP_METHODS", "RULES", "analyze"]

HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE"})
_SELECTED_KINDS = ("AuthorizationPolicy", "RateLimitPolicy", "DataProtectionPolicy")

Rules = Callable[[Sequence[Resource[Any]], MeshSpec], Iterable[Finding]]


def _mesh(resources: Sequence[Resource[Any]]) -> MeshSpec:
    return next((r.spec for r in resources if isinstance(r, Mesh)), MeshSpec())


def _policies(resources: Sequence[Resource[Any]]) -> list[Resource[Any]]:
    return [r for r in resources if r.kind in _SELECTED_KINDS]


def _authz(resources: Sequence[Resource[Any]]) -> list[AuthorizationPolicy]:
    return [r for r in resources if isinstance(r, AuthorizationPolicy)]


def selector_matches_nothing(resources: Sequence[Resource[Any]], mesh: MeshSpec) -> Iterable[Finding]:
    workloads = [r for r in resources if isinstance(r, Workload)]
    if not workloads:
        return
    for p in _policies(resources):
        labels = p.spec.selector.match_labels
        ns = p.metadata.namespace
        if not labels or ns not in {w.metadata.namespace for w in workloads} | {mesh.root_namespace}:
            continue
        scope = [w for w in workloads if ns in (w.metadata.namespace, mesh.root_namespace)]
        if not any(p.spec.selector.matches(dict(w.metadata.labels)) for w in scope):
            wanted = ", ".join(f"{k}={v}" for k, v in sorted(labels.items()))
            yield Finding(
                "warning",
                "MW001",
                p.ref,
                f"selector {wanted} matches no Workload in namespace {ns}",
                "fix the labels, or the Workload's metadata.labels",
            )


def namespace_without_workloads(resources: Sequence[Resource[Any]], mesh: MeshSpec) -> Iterable[Finding]:
    workloads = [r for r in resources if isinstance(r, Workload)]
    if not workloads:
        return
    spaces = {w.metadata.namespace for w in workloads}
    for p in _policies(resources):
        ns = p.metadata.namespace
        if ns not in spaces and ns != mesh.root_namespace:
            yield Finding(
                "warning",
                "MW002",
                p.ref,
                f"no Workload runs in namespace {ns} (namespaces with workloads: {', '.join(sorted(spaces))})",
                "set metadata.namespace to the namespace of the workloads it protects",
            )


def _principal_values(rule: Rule) -> list[str]:
    values = [v for f in rule.from_ for v in (*f.source.principals, *f.source.not_principals)]
    values += [v for c in rule.when if c.key == "source.principal" for v in (*c.values, *c.not_values)]
    return values


def foreign_trust_domain(resources: Sequence[Resource[Any]], mesh: MeshSpec) -> Iterable[Finding]:
    known = {mesh.trust_domain, *mesh.trust_domain_aliases}
    for p in _authz(resources):
        for index, rule in enumerate(p.spec.rules):
            for value in _principal_values(rule):
                td = principal_trust_domain(value)
                if td is not None and td not in known:
                    yield Finding(
                        "warning",
                        "MW003",
                        p.ref,
                        f"rules[{index}]: principal {value!r} is in trust domain {td!r}, not this mesh's "
                        f"{mesh.trust_domain!r}: it never matches",
                        f"write {mesh.trust_domain}/ns/NS/sa/SA, or add {td!r} to Mesh spec.trustDomainAliases",
                    )


def bad_methods(resources: Sequence[Resource[Any]], _mesh: MeshSpec) -> Iterable[Finding]:
    for p in _authz(resources):
        for index, rule in enumerate(p.spec.rules):
            for t in rule.to:
                for value in (*t.operation.methods, *t.operation.not_methods):
                    if "*" in value or value in HTTP_METHODS:
                        continue
                    if value.upper() in HTTP_METHODS:
                        message = f"rules[{index}]: method {value!r} is lower case and never matches"
                        fix = f"write {value.upper()!r} (methods are case-sensitive)"
                    else:
                        message = f"rules[{index}]: unknown HTTP method {value!r}"
                        fix = f"use one of {', '.join(sorted(HTTP_METHODS))}"
                    yield Finding("warning", "MW004", p.ref, message, fix)


def request_principals_unauthenticated(
    resources: Sequence[Resource[Any]], _mesh: MeshSpec
) -> Iterable[Finding]:
    if any(r.kind == "RequestAuthentication" for r in resources):
        return
    for p in _authz(resources):
        for index, rule in enumerate(p.spec.rules):
            if any(f.source.request_principals or f.source.not_request_principals for f in rule.from_):
                yield Finding(
                    "warning",
                    "MW005",
                    p.ref,
                    f"rules[{index}]: requestPrincipals is set but no RequestAuthentication is in force, "
                    "so no request has a request principal",
                    "add a RequestAuthentication for the workload, or match on principals",
                )


def _never_matches(rule: Rule, mesh: MeshSpec) -> str | None:
    """Why a rule can never match a request, or None."""
    known = {mesh.trust_domain, *mesh.trust_domain_aliases}
    for f in rule.from_:
        principals = f.source.principals
        if principals and all(
            (td := principal_trust_domain(v)) is not None and td not in known for v in principals
        ):
            return "every principal it names is in another trust domain"
        if set(principals) and set(principals) <= set(f.source.not_principals):
            return "its principals are all excluded by notPrincipals"
    for t in rule.to:
        o = t.operation
        if o.methods and all(m.upper() in HTTP_METHODS and m not in HTTP_METHODS for m in o.methods):
            return "its methods are all lower case (the sidecar refuses such requests first)"
        for name, values, excluded in (
            ("methods", o.methods, o.not_methods),
            ("paths", o.paths, o.not_paths),
            ("models", o.models, o.not_models),
        ):
            if values and set(values) <= set(excluded):
                return f"its {name} are all excluded by not{name.capitalize()}"
    return None


def _is_empty(rule: Rule) -> bool:
    return (
        all(not f.source.model_dump(exclude_defaults=True) for f in rule.from_)
        and all(not t.operation.model_dump(exclude_defaults=True) for t in rule.to)
        and not rule.when
    )


def dead_denies_and_open_allows(resources: Sequence[Resource[Any]], mesh: MeshSpec) -> Iterable[Finding]:
    for p in _authz(resources):
        if p.spec.action == "DENY":
            if not p.spec.rules:
                yield Finding(
                    "warning",
                    "MW006",
                    p.ref,
                    "a DENY policy without rules never matches (it denies nothing)",
                    "add rules saying what to deny",
                )
            for index, rule in enumerate(p.spec.rules):
                why = _never_matches(rule, mesh)
                if why is not None:
                    yield Finding(
                        "warning",
                        "MW006",
                        p.ref,
                        f"DENY rules[{index}] can never match: {why}",
                        "fix the rule",
                    )
        elif p.spec.action == "ALLOW":
            for index, rule in enumerate(p.spec.rules):
                if _is_empty(rule):
                    yield Finding(
                        "warning",
                        "MW007",
                        p.ref,
                        f"ALLOW rules[{index}] is empty: it allows every caller every operation",
                        "name the callers (from.source.principals) and operations (to.operation)",
                    )


RULES: tuple[Rules, ...] = (
    selector_matches_nothing,
    namespace_without_workloads,
    foreign_trust_domain,
    bad_methods,
    request_principals_unauthenticated,
    dead_denies_and_open_allows,
)


def analyze(resources: Sequence[Resource[Any]]) -> list[Finding]:
    """Every finding of every rule, in a stable order (resource, then code)."""
    mesh = _mesh(resources)
    found = [finding for rule in RULES for finding in rule(resources, mesh)]
    return sorted(found, key=lambda f: (f.resource, f.code, f.message))
