"""Services, their workloads and identities, and the policies that apply to them (pure).

A service is ``<service>.<namespace>`` served by one or more ``Workload`` resources; requests
are attributed to it by the serving sidecar's identity. Which policies select a workload is
decided by :func:`meshward.authz.engine.select_policies` (the engine's own rule, in one place).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from meshward.authz.engine import select_policies
from meshward.config.snapshot import WorkloadInfo
from meshward.resources.authorization import AuthorizationPolicy, Rule
from meshward.resources.base import Resource
from meshward.resources.mesh import Workload
from meshward.review.data import MeshData

__all__ = ["PolicyRule", "Service", "applicable", "policy_name", "rules_of", "services"]

_P = TypeVar("_P", bound=Resource[Any])


def policy_name(policy: Resource[Any]) -> str:
    return f"{policy.metadata.namespace}/{policy.metadata.name}"


@dataclass(frozen=True)
class Service:
    """``name.namespace`` and the workloads serving it (sorted by name)."""

    name: str
    namespace: str
    workloads: tuple[Workload, ...]
    identities: tuple[str, ...]

    @property
    def ref(self) -> str:
        return f"{self.name}.{self.namespace}"

    def infos(self) -> list[WorkloadInfo]:
        return [
            WorkloadInfo(
                w.metadata.name, w.metadata.namespace, w.service, w.service_account, dict(w.metadata.labels)
            )
            for w in self.workloads
        ]


def services(data: MeshData) -> list[Service]:
    """Every declared service, sorted by namespace then name."""
    grouped: dict[tuple[str, str], list[Workload]] = {}
    for w in data.workloads:
        grouped.setdefault((w.metadata.namespace, w.service), []).append(w)
    out = []
    for (namespace, name), members in sorted(grouped.items()):
        members.sort(key=lambda w: w.metadata.name)
        identities = tuple(sorted({data.identity_of(w) for w in members}))
        out.append(Service(name, namespace, tuple(members), identities))
    return out


def applicable(data: MeshData, service: Service, kind: type[_P]) -> list[_P]:
    """Policies of ``kind`` selecting any workload of ``service`` (sorted, no duplicates)."""
    found: dict[str, _P] = {}
    for info in service.infos():
        for p in select_policies(data.resources, info, data.mesh.root_namespace, kind):
            found[policy_name(p)] = p
    return [found[k] for k in sorted(found)]


@dataclass(frozen=True)
class PolicyRule:
    """One rule of an AuthorizationPolicy, named like the engine names it."""

    policy: AuthorizationPolicy
    index: int
    rule: Rule

    @property
    def name(self) -> str:
        return policy_name(self.policy)

    @property
    def ref(self) -> str:
        return f"{self.name} rules[{self.index}]"

    @property
    def action(self) -> str:
        return self.policy.spec.action

    @property
    def dry_run(self) -> bool:
        return self.policy.dry_run


def rules_of(data: MeshData) -> Iterator[PolicyRule]:
    """Every rule of every AuthorizationPolicy, in namespace/name then rule order."""
    for r in data.resources:
        if isinstance(r, AuthorizationPolicy):
            for i, rule in enumerate(r.spec.rules):
                yield PolicyRule(r, i, rule)
