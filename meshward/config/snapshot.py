"""What one sidecar enforces: a :class:`MeshSnapshot` for one workload at one generation.

The control plane builds it (only the resources that concern the workload); the static
bootstrap file used in tests holds the same JSON. Filters compile from it; a new generation
is a new snapshot, swapped in atomically by the sidecar.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from meshward.resources import KINDS, Resource
from meshward.resources.mesh import MeshSpec

__all__ = ["MeshSnapshot", "ServiceEntry", "WorkloadInfo"]


@dataclass(frozen=True, slots=True)
class WorkloadInfo:
    """The workload a sidecar serves."""

    name: str
    namespace: str
    service: str
    service_account: str
    labels: dict[str, str] = field(default_factory=dict)

    def spiffe_id(self, trust_domain: str) -> str:
        return f"spiffe://{trust_domain}/ns/{self.namespace}/sa/{self.service_account}"


@dataclass(frozen=True, slots=True)
class ServiceEntry:
    """A mesh service: where its sidecars listen and which identities may serve it."""

    service: str
    namespace: str
    endpoints: tuple[str, ...]  # "host:port" of the serving sidecars' inbound listeners
    identities: tuple[str, ...]  # SPIFFE URIs a server for this service must present
    # endpoint ("host:port") → the labels of the Workload behind it (version, ...): subsets
    endpoint_labels: dict[str, dict[str, str]] = field(default_factory=dict)

    @property
    def host(self) -> str:
        return f"{self.service}.{self.namespace}"


@dataclass(frozen=True, slots=True)
class MeshSnapshot:
    generation: int
    trust_domain: str
    mesh: MeshSpec
    workload: WorkloadInfo
    services: dict[str, ServiceEntry]  # keyed by "service.namespace"
    resources: tuple[Resource[Any], ...]  # policies that may concern this workload
    gateways: tuple[str, ...] = ()  # SPIFFE URIs of the mesh's ingress gateways (trusted for end users)
    #: Serials (lower-case hex) of revoked, unexpired SVIDs: refused at every handshake.
    revoked: tuple[str, ...] = ()

    def of_kind(self, kind: str) -> list[Resource[Any]]:
        return [r for r in self.resources if r.kind == kind]

    def to_json(self) -> dict[str, Any]:
        doc = self._doc()
        if self.revoked:  # additive: absent when nothing is revoked
            doc["revoked"] = list(self.revoked)
        return doc

    def _doc(self) -> dict[str, Any]:
        return {
            "generation": self.generation,
            "trust_domain": self.trust_domain,
            "mesh": self.mesh.model_dump(by_alias=True, mode="json"),
            "workload": {
                "name": self.workload.name,
                "namespace": self.workload.namespace,
                "service": self.workload.service,
                "service_account": self.workload.service_account,
                "labels": dict(self.workload.labels),
            },
            "services": [
                {
                    "service": s.service,
                    "namespace": s.namespace,
                    "endpoints": list(s.endpoints),
                    "identities": list(s.identities),
                    "endpoint_labels": {ep: dict(labels) for ep, labels in s.endpoint_labels.items()},
                }
                for s in self.services.values()
            ],
            "resources": [r.to_doc() for r in self.resources],
            "gateways": list(self.gateways),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> MeshSnapshot:
        resources: list[Resource[Any]] = []
        for doc in data.get("resources", []):
            kind = KINDS.get(doc.get("kind", ""))
            if kind is None:
                raise ValueError(f"unknown kind {doc.get('kind')!r}")
            resources.append(kind.model_validate(doc))
        services = {}
        for s in data.get("services", []):
            entry = ServiceEntry(
                s["service"],
                s["namespace"],
                tuple(s["endpoints"]),
                tuple(s["identities"]),
                {ep: dict(labels) for ep, labels in s.get("endpoint_labels", {}).items()},
            )
            services[entry.host] = entry
        w = data["workload"]
        return cls(
            generation=int(data.get("generation", 0)),
            trust_domain=data["trust_domain"],
            mesh=MeshSpec.model_validate(data.get("mesh", {})),
            workload=WorkloadInfo(
                w["name"], w["namespace"], w["service"], w["service_account"], dict(w.get("labels", {}))
            ),
            services=services,
            resources=tuple(resources),
            gateways=tuple(str(g) for g in data.get("gateways", [])),
            revoked=tuple(str(s) for s in data.get("revoked", ())),
        )
