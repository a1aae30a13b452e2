"""The authorization engine of one workload: compiled policies in, decisions out.

Which policies apply (:func:`~meshward.config.selection.select_policies`, re-exported here):
those in the workload's namespace and those in the mesh root namespace (mesh-wide), whose
``selector`` matches the workload's labels (an empty selector selects every workload in scope).

How a request is decided (:meth:`AuthzEngine.evaluate`), Istio's order with zero trust on top:

1. a matching DENY policy denies ("denied by ns/name rules[i]");
2. if the workload has ALLOW policies, a matching one allows, else deny ("no ALLOW policy
   matched"), even when none of them has rules (``spec: {}`` = allow-nothing);
3. with no ALLOW policy at all, ``Mesh.spec.defaultPolicy`` decides: ``deny`` (the default,
   "default deny") or ``allow`` (Istio's behaviour).

Dry-run policies do not change the decision; the decision they *would* give (everything
enforced together) is returned in ``dry_run``. Matching AUDIT policies are listed in ``audit``.

Evaluation is a dictionary lookup of the rules pinned to the caller's exact principal (tried
only for that caller), then one generated function holding every other rule of the action
(:mod:`meshward.authz.compiler`); decisions are prebuilt objects.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from meshward.authz.aliases import resolve_aliases
from meshward.authz.attributes import AuthzDecision, RequestAttributes
from meshward.authz.compiler import (
    CodeBuilder,
    Predicate,
    RuleIndexFunction,
    principal_keys,
    rule_expression,
    rule_uses_model,
)
from meshward.config.selection import select_policies
from meshward.config.snapshot import MeshSnapshot, WorkloadInfo
from meshward.resources.authorization import AuthorizationPolicy
from meshward.resources.base import Resource

__all__ = ["AuthzEngine", "compile_engine", "engine_from_snapshot", "select_policies"]


@dataclass(frozen=True, slots=True)
class _CompiledRule:
    expression: str
    decision: AuthzDecision
    principals: frozenset[str] | None  # the exact callers the rule is pinned to, if any


class _RuleSet:
    """The rules of one action: those pinned to exact callers, found by a dictionary lookup of
    the caller's principal, are tried first; then every other rule, in one generated function."""

    __slots__ = ("_by_principal", "_decisions", "_pinned_names", "_unpinned", "_unpinned_name")

    def __init__(self, rules: Sequence[_CompiledRule], code: CodeBuilder) -> None:
        self._decisions = tuple(rule.decision for rule in rules)
        self._pinned_names: dict[str, list[tuple[str, AuthzDecision]]] = {}
        unpinned: list[tuple[str, int]] = []
        for index, rule in enumerate(rules):
            if rule.principals is None:
                unpinned.append((rule.expression, index))
                continue
            name = code.predicate(rule.expression)
            for principal in sorted(rule.principals):
                self._pinned_names.setdefault(principal, []).append((name, rule.decision))
        self._unpinned_name = code.first_match(unpinned) if unpinned else None
        self._by_principal: dict[str | None, tuple[tuple[Predicate, AuthzDecision], ...]] = {}
        self._unpinned: RuleIndexFunction | None = None

    def link(self, namespace: dict[str, Any]) -> None:
        """Resolve the generated functions once the builder has compiled them."""
        self._by_principal = {
            principal: tuple((namespace[name], decision) for name, decision in entries)
            for principal, entries in self._pinned_names.items()
        }
        if self._unpinned_name is not None:
            self._unpinned = CodeBuilder.function(namespace, self._unpinned_name)

    def first_match(self, r: RequestAttributes) -> AuthzDecision | None:
        pinned = self._by_principal.get(r.principal)
        if pinned is not None:
            for matches, decision in pinned:
                if matches(r):
                    return decision
        if self._unpinned is not None:
            index = self._unpinned(r)
            if index >= 0:
                return self._decisions[index]
        return None


_COMBINED_CACHE_SIZE = 4096
_NO_ALLOW_MATCH = AuthzDecision(allowed=False, reason="no ALLOW policy matched")
_DEFAULT_DENY = AuthzDecision(allowed=False, reason="default deny")
_DEFAULT_ALLOW = AuthzDecision(allowed=True, reason="no ALLOW policy (defaultPolicy: allow)")


class AuthzEngine:
    """Decides requests for one workload. Immutable; build a new one per config generation.

    Evaluation order within an action: rules pinned to the caller's exact principal first,
    then the others; each group in namespace/name order, then rule order. The order only
    changes which matching policy is named, never the outcome.
    """

    def __init__(
        self,
        policies: Sequence[AuthorizationPolicy],
        *,
        trust_domain: str,
        default_policy: Literal["deny", "allow"] = "deny",
    ) -> None:
        self.policies = tuple(f"{p.metadata.namespace}/{p.metadata.name}" for p in policies)
        self.uses_model = any(rule_uses_model(rule) for p in policies for rule in p.spec.rules)
        code = CodeBuilder()
        compiled = {id(p): _compile_policy(p, trust_domain, code) for p in policies}

        def rules(action: str, dry_run: bool) -> list[_CompiledRule]:
            return [
                rule
                for p in policies
                if p.spec.action == action and p.dry_run == dry_run
                for rule in compiled[id(p)]
            ]

        self._deny = _RuleSet(rules("DENY", False), code)
        self._allow = _RuleSet(rules("ALLOW", False), code)
        self._dry_deny = _RuleSet(rules("DENY", True), code)
        self._dry_allow = _RuleSet(rules("ALLOW", True), code)
        has_allow = any(p.spec.action == "ALLOW" and not p.dry_run for p in policies)
        has_any_allow = any(p.spec.action == "ALLOW" for p in policies)
        fallback = _DEFAULT_DENY if default_policy == "deny" else _DEFAULT_ALLOW
        self._fallback = _NO_ALLOW_MATCH if has_allow else fallback
        self._shadow_fallback = _NO_ALLOW_MATCH if has_any_allow else fallback
        self._has_dry_run = any(p.dry_run for p in policies)
        audit = [
            (_any_of_rules(compiled[id(p)]), f"{p.metadata.namespace}/{p.metadata.name}")
            for p in policies
            if p.spec.action == "AUDIT" and p.spec.rules
        ]
        audit_name = _audit_function(audit, code) if audit else None
        namespace = code.build()
        for rule_set in (self._deny, self._allow, self._dry_deny, self._dry_allow):
            rule_set.link(namespace)
        self._audit: Callable[[RequestAttributes], tuple[str, ...]] | None = (
            namespace[audit_name] if audit_name is not None else None
        )
        self._plain = not self._has_dry_run and self._audit is None
        # Decisions with dry-run/audit results, built once per combination seen.
        self._combined: dict[tuple[int, int, tuple[str, ...]], AuthzDecision] = {}

    def evaluate(self, r: RequestAttributes) -> AuthzDecision:
        """Decide one request. Pure: reads ``r``, returns a decision."""
        allow: AuthzDecision | None = None
        deny = self._deny.first_match(r)
        if deny is not None:
            decision = deny
        else:
            allow = self._allow.first_match(r)
            decision = allow if allow is not None else self._fallback
        if self._plain:
            return decision
        shadow: AuthzDecision | None = None
        if self._has_dry_run:
            if deny is not None:
                shadow = deny
            else:
                shadow = self._dry_deny.first_match(r) or allow or self._dry_allow.first_match(r)
                if shadow is None:
                    shadow = self._shadow_fallback
        audit = self._audit(r) if self._audit is not None else ()
        key = (id(decision), id(shadow), audit)  # decisions are owned by the engine: ids are stable
        combined = self._combined.get(key)
        if combined is None:
            combined = AuthzDecision(
                allowed=decision.allowed,
                reason=decision.reason,
                action=decision.action,
                policy=decision.policy,
                rule=decision.rule,
                dry_run=shadow,
                audit=audit,
            )
            if len(self._combined) < _COMBINED_CACHE_SIZE:
                self._combined[key] = combined
        return combined


def compile_engine(
    policies: Iterable[Resource[Any]],
    workload: WorkloadInfo,
    *,
    trust_domain: str,
    root_namespace: str = "meshward-system",
    default_policy: Literal["deny", "allow"] = "deny",
    trust_domain_aliases: Sequence[str] = (),
) -> AuthzEngine:
    """Select the policies that apply to ``workload`` and compile them (principals of an alias
    trust domain read as ``trust_domain``'s, see :mod:`meshward.authz.aliases`)."""
    chosen = select_policies(policies, workload, root_namespace, AuthorizationPolicy)
    if trust_domain_aliases:
        chosen = [resolve_aliases(p, trust_domain, trust_domain_aliases) for p in chosen]
    return AuthzEngine(chosen, trust_domain=trust_domain, default_policy=default_policy)


def engine_from_snapshot(snapshot: MeshSnapshot) -> AuthzEngine:
    """The engine for the workload a sidecar serves, from its config snapshot."""
    return compile_engine(
        snapshot.of_kind(AuthorizationPolicy.kind_name),
        snapshot.workload,
        trust_domain=snapshot.trust_domain,
        root_namespace=snapshot.mesh.root_namespace,
        default_policy=snapshot.mesh.default_policy,
        trust_domain_aliases=snapshot.mesh.trust_domain_aliases,
    )


def _compile_policy(policy: AuthorizationPolicy, trust_domain: str, code: CodeBuilder) -> list[_CompiledRule]:
    name = f"{policy.metadata.namespace}/{policy.metadata.name}"
    action = policy.spec.action
    out: list[_CompiledRule] = []
    for index, rule in enumerate(policy.spec.rules):
        if action == "DENY":
            decision = AuthzDecision(False, f"denied by {name} rules[{index}]", "DENY", name, index)
        elif action == "ALLOW":
            decision = AuthzDecision(True, f"allowed by {name} rules[{index}]", "ALLOW", name, index)
        else:  # AUDIT: only the policy name is used
            decision = AuthzDecision(True, f"audited by {name} rules[{index}]", None, name, index)
        keys = principal_keys(rule, trust_domain)
        out.append(_CompiledRule(rule_expression(rule, trust_domain, code), decision, keys))
    return out


def _any_of_rules(rules: Sequence[_CompiledRule]) -> str:
    return " or ".join(f"({rule.expression})" for rule in rules)


def _audit_function(policies: Sequence[tuple[str, str]], code: CodeBuilder) -> str:
    """A function returning the names of the AUDIT policies whose rules match."""
    lines = ["out = ()"]
    for expression, name in policies:
        lines.append(f"if {expression}:\n        out += ({code.const(name)},)")
    return code.function_body(lines, "out")
