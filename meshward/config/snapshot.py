"""What one sidecar enforces: a :class:`MeshSnapshot` for one workload at one generation.

The control plane builds it (only the resources that concern the workload); the static
bootstrap file used in tests holds the same JSON. Filters compile from it; a new generation
is a new snapshot, swapped in atomically by the sidecar.

A sidecar decodes one generation after another with a :class:`SnapshotDecoder`, which keeps the
resources of the generation before, by their JSON text: a resource that did not change is not
validated again (most of a snapshot's decoding time is pydantic validation, and a typical change
touches one resource of many). Resources are frozen models, so sharing one between two
generations is safe; a resource whose text changed in any way is validated as new. Entries of
the services table are reused the same way, so what a sidecar derives from an unchanged entry
(its upstream targets, :mod:`meshward.proxy.routes`) can be kept by the entry's identity. The
identity of a document is its orjson text (about 14x faster than ``json.dumps`` here, and the
same input text always gives the same key: key order is kept).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from meshward.config.reuse import reused
from meshward.resources import KINDS, Resource
from meshward.resources.mesh import MeshSpec

__all__ = ["MeshSnapshot", "ServiceEntry", "SnapshotDecoder", "WorkloadInfo"]


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

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "namespace": self.namespace,
            "service": self.service,
            "service_account": self.service_account,
            "labels": dict(self.labels),
        }


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
            "workload": self.workload.to_json(),
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
        """Decode one snapshot (ValueError, KeyError, TypeError or pydantic's ValidationError if
        malformed)."""
        return SnapshotDecoder().decode(data)


def _text(doc: Any) -> bytes:
    """The identity of a decoded JSON value: its text (same input text → same key)."""
    return orjson.dumps(doc)


class SnapshotDecoder:
    """Decodes a sidecar's successive snapshots, reusing what did not change since the last one.

    Not thread-safe: one decoder per sidecar, used by one task at a time (its watch)."""

    def __init__(self) -> None:
        self._known: dict[bytes, Any] = {}  # a document's text → its resource, MeshSpec or entry

    def decode(self, data: dict[str, Any]) -> MeshSnapshot:
        known: dict[bytes, Any] = self._known
        fresh: dict[bytes, Any] = {}
        resources = [reused(_text(d), d, _resource, known, fresh) for d in data.get("resources", [])]
        mesh_doc = data.get("mesh", {})
        mesh = reused(_text(mesh_doc), mesh_doc, MeshSpec.model_validate, known, fresh)
        services = {}
        for s in data.get("services", []):
            entry = reused(_text(s), s, _service, known, fresh)
            services[entry.host] = entry
        w = data["workload"]
        snapshot = MeshSnapshot(
            generation=int(data.get("generation", 0)),
            trust_domain=data["trust_domain"],
            mesh=mesh,
            workload=WorkloadInfo(
                w["name"], w["namespace"], w["service"], w["service_account"], dict(w.get("labels", {}))
            ),
            services=services,
            resources=tuple(resources),
            gateways=tuple(str(g) for g in data.get("gateways", [])),
            revoked=tuple(str(s) for s in data.get("revoked", ())),
        )
        self._known = fresh  # only once the whole snapshot decoded: a malformed one changes nothing
        return snapshot


def _resource(doc: dict[str, Any]) -> Resource[Any]:
    kind = KINDS.get(doc.get("kind", ""))
    if kind is None:
        raise ValueError(f"unknown kind {doc.get('kind')!r}")
    return kind.model_validate(doc)


def _service(s: dict[str, Any]) -> ServiceEntry:
    return ServiceEntry(
        s["service"],
        s["namespace"],
        tuple(s["endpoints"]),
        tuple(s["identities"]),
        {ep: dict(labels) for ep, labels in s.get("endpoint_labels", {}).items()},
    )
