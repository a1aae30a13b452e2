"""Which workload-selected policies apply to a workload (Istio's selection rule, one copy).

A policy applies to a workload when it lives in the workload's namespace or in the mesh's root
namespace (mesh-wide) and its ``spec.selector`` matches the workload's labels (an empty selector
selects every workload in scope). Shared by every such kind: authorization, rate limits, DLP,
request authentication, egress.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, TypeVar

from meshward.config.snapshot import WorkloadInfo
from meshward.resources.base import Resource

__all__ = ["select_policies"]

_Policy = TypeVar("_Policy", bound=Resource[Any])


def select_policies(
    policies: Iterable[Resource[Any]], workload: WorkloadInfo, root_namespace: str, kind: type[_Policy]
) -> list[_Policy]:
    """The policies of class ``kind`` that apply to ``workload``: those of its namespace or the
    root one whose ``spec.selector`` matches its labels, sorted by namespace/name."""
    chosen = [
        p
        for p in policies
        if isinstance(p, kind)
        and p.metadata.namespace in (workload.namespace, root_namespace)
        and p.spec.selector.matches(workload.labels)
    ]
    return sorted(chosen, key=lambda p: (p.metadata.namespace, p.metadata.name))
