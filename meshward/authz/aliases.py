"""``Mesh.spec.trustDomainAliases`` (Istio's meaning): principals written with an alias trust
domain (e.g. ``cluster.local/ns/web/sa/webapp`` copied from Istio) mean this mesh's identity.

:func:`resolve_aliases` rewrites a policy's principals before it is compiled, so the sidecar,
``meshward check`` and ``meshward run --as`` (:func:`local_identity`) agree on every identity.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, TypeVar

from meshward.resources.authorization import AuthorizationPolicy

__all__ = ["principal_trust_domain", "resolve_aliases", "rewrite_principal"]

_Policy = TypeVar("_Policy", bound=AuthorizationPolicy)


def principal_trust_domain(value: str) -> str | None:
    """The trust domain a principal (pattern) names: ``td/ns/NS/sa/SA`` or ``spiffe://td/...``;
    None for the short form ``ns/sa``, ``*`` and patterns whose trust domain is a wildcard."""
    parts = value.removeprefix("spiffe://").split("/")
    if len(parts) >= 5 and parts[1] == "ns" and parts[0] and "*" not in parts[0]:
        return parts[0]
    return None


def rewrite_principal(value: str, trust_domain: str, aliases: Iterable[str]) -> str:
    """``value`` with an alias trust domain replaced by ``trust_domain`` (else unchanged)."""
    td = principal_trust_domain(value)
    if td is None or td == trust_domain or td not in set(aliases):
        return value
    scheme = "spiffe://" if value.startswith("spiffe://") else ""
    return f"{scheme}{trust_domain}{value.removeprefix(scheme)[len(td) :]}"


def resolve_aliases(policy: _Policy, trust_domain: str, aliases: Iterable[str]) -> _Policy:
    """The policy with every principal of an alias trust domain rewritten to ``trust_domain``."""
    aliases = frozenset(aliases) - {trust_domain}
    if not aliases:
        return policy
    doc = policy.to_doc()

    def fix(values: list[Any]) -> list[Any]:
        return [rewrite_principal(v, trust_domain, aliases) if isinstance(v, str) else v for v in values]

    for rule in doc["spec"].get("rules", []):
        for entry in rule.get("from", []):
            source = entry.get("source", {})
            for key in ("principals", "notPrincipals"):
                source[key] = fix(source.get(key, []))
        for cond in rule.get("when", []):
            if cond.get("key") == "source.principal":
                for key in ("values", "notValues"):
                    cond[key] = fix(cond.get(key, []))
    return type(policy).model_validate(doc)
