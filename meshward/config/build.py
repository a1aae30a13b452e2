"""Pure: one generation's resources + registered sidecars → the :class:`MeshSnapshot` of one workload.

What a sidecar receives is only what may concern it (least privilege, and less to compile):

- the mesh-wide settings (the ``Mesh`` resource, or defaults with the mesh's trust domain);
- the services table: every ``Workload``'s service, the inbound endpoints its sidecars registered
  (an endpoint that is not a valid ``HOST:PORT`` is skipped, never the whole table), and the one
  SPIFFE identity a server for it must present;
- the serials of revoked SVIDs that have not expired yet (refused at every handshake);
- the policies (every kind but ``Mesh`` and ``Workload``) in the workload's own namespace and in
  the mesh's root namespace (mesh-wide policies, as Istio's root namespace);
- every ``ExternalService`` (like Istio's ServiceEntry, exported to all namespaces): a host
  becomes reachable only through an ``EgressPolicy`` that selects the caller.
- every ``ModelRoute`` (routing, as Istio's exported VirtualServices: a caller in any namespace
  routes by the route of the service it calls).

A sidecar for an identity that has no ``Workload`` (``meshward run --as ns/name``) gets an ad hoc
workload with that service account and no labels.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from meshward.config.endpoint import parse_endpoint
from meshward.config.snapshot import MeshSnapshot, ServiceEntry, WorkloadInfo
from meshward.config.store import SidecarRecord
from meshward.identity.spiffe import SpiffeId
from meshward.resources import Resource
from meshward.resources.gateway import Gateway
from meshward.resources.mesh import Mesh, MeshSpec, Workload

__all__ = [
    "build_snapshot",
    "find_workload",
    "gateway_identities",
    "mesh_spec",
    "services_table",
    "workload_info",
]

_NOT_POLICY = ("Mesh", "Workload")


def mesh_spec(resources: Iterable[Resource[Any]], trust_domain: str) -> MeshSpec:
    for r in resources:
        if isinstance(r, Mesh):
            return r.spec
    return MeshSpec.model_validate({"trustDomain": trust_domain})


def find_workload(resources: Iterable[Resource[Any]], namespace: str, name: str) -> Workload | None:
    """The ``Workload`` called ``name`` in ``namespace`` (by name first, then service account)."""
    workloads = [r for r in resources if isinstance(r, Workload) and r.metadata.namespace == namespace]
    for w in workloads:
        if w.metadata.name == name:
            return w
    for w in workloads:
        if w.service_account == name:
            return w
    return None


def workload_info(resources: Sequence[Resource[Any]], namespace: str, name: str) -> WorkloadInfo:
    w = find_workload(resources, namespace, name)
    if w is None:
        gw = next(
            (
                r
                for r in resources
                if isinstance(r, Gateway) and r.metadata.namespace == namespace and r.metadata.name == name
            ),
            None,
        )
        labels = dict(gw.metadata.labels) if gw is not None else {}
        return WorkloadInfo(name=name, namespace=namespace, service=name, service_account=name, labels=labels)
    return WorkloadInfo(
        name=w.metadata.name,
        namespace=namespace,
        service=w.service,
        service_account=w.service_account,
        labels=dict(w.metadata.labels),
    )


def services_table(
    resources: Iterable[Resource[Any]], sidecars: Iterable[SidecarRecord], trust_domain: str
) -> dict[str, ServiceEntry]:
    """``service.namespace`` → endpoints (registered inbound listeners) and the expected identity."""
    inbound: dict[tuple[str, str], list[str]] = {}
    labels: dict[str, dict[str, str]] = {}
    for s in sidecars:
        try:
            parse_endpoint(s.inbound)
        except ValueError:  # one bad record is skipped (``meshward endpoints list`` names it)
            continue
        inbound.setdefault((s.namespace, s.workload), []).append(s.inbound)
    grouped: dict[tuple[str, str], tuple[list[str], set[str]]] = {}
    for r in resources:
        if not isinstance(r, Workload):
            continue
        ns = r.metadata.namespace
        endpoints, identities = grouped.setdefault((r.service, ns), ([], set()))
        served = inbound.get((ns, r.metadata.name), [])
        endpoints.extend(served)
        labels.update((ep, dict(r.metadata.labels)) for ep in served)
        identities.add(SpiffeId(trust_domain, ns, r.service_account).uri)
    table: dict[str, ServiceEntry] = {}
    for (service, ns), (endpoints, identities) in sorted(grouped.items()):
        eps = tuple(sorted(set(endpoints)))
        entry = ServiceEntry(service, ns, eps, tuple(sorted(identities)), {e: labels[e] for e in eps})
        table[entry.host] = entry
    return table


def build_snapshot(
    generation: int,
    resources: Sequence[Resource[Any]],
    sidecars: Iterable[SidecarRecord],
    trust_domain: str,
    namespace: str,
    name: str,
    services: dict[str, ServiceEntry] | None = None,
    revoked: Sequence[str] = (),
) -> MeshSnapshot:
    """The snapshot for workload ``namespace/name`` at ``generation``.

    ``services``: the :func:`services_table` of these resources and sidecars, when the caller
    already has it (it is the same for every workload of a generation).
    """
    spec = mesh_spec(resources, trust_domain)
    scope = {namespace, spec.root_namespace}
    policies = tuple(
        r
        for r in resources
        if r.kind not in _NOT_POLICY
        and (r.metadata.namespace in scope or r.kind in ("ExternalService", "ModelRoute"))
    )
    return MeshSnapshot(
        generation=generation,
        trust_domain=trust_domain,
        mesh=spec,
        workload=workload_info(resources, namespace, name),
        services=services if services is not None else services_table(resources, sidecars, trust_domain),
        resources=policies,
        gateways=gateway_identities(resources, trust_domain),
        revoked=tuple(revoked),
    )


def gateway_identities(resources: Iterable[Resource[Any]], trust_domain: str) -> tuple[str, ...]:
    """The SPIFFE URIs of every ``Gateway`` (``ns/<namespace>/sa/<name>``)."""
    return tuple(
        sorted(
            SpiffeId(trust_domain, r.metadata.namespace, r.metadata.name).uri
            for r in resources
            if isinstance(r, Gateway)
        )
    )
