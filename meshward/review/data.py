"""The plain data every review and discovery is computed from (no I/O here).

:class:`MeshData` is a snapshot of what Meshward recorded: the config (resources of the current
generation), the requests seen (from the audit trail), the certificates the authority issued,
the CA's own certificates, the sidecars registered with the control plane, and alerts. The
adapters of :mod:`meshward.review.sources` fill it from a state directory; tests build it by
hand. Everything in it is immutable and sorted on construction, so the same data is the same
report.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from meshward.resources.base import Resource
from meshward.resources.mesh import Mesh, MeshSpec, Workload

__all__ = [
    "Alert",
    "CaCertificate",
    "IssuedCertificate",
    "MeshData",
    "ObservedRequest",
    "Window",
    "iso_ms",
    "principal_of",
]


def iso_ms(ms: int) -> str:
    """Milliseconds since the epoch as ``2026-12-01T10:00:00Z`` (UTC, seconds precision)."""
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def principal_of(uri: str) -> str:
    """``spiffe://td/ns/a/sa/b`` → Istio's principal form ``td/ns/a/sa/b``."""
    return uri.removeprefix("spiffe://")


@dataclass(frozen=True, slots=True, order=True)
class ObservedRequest:
    """One request a sidecar decided, as its audit record tells it.

    ``source`` is the caller's SPIFFE URI (None: plaintext, PERMISSIVE); ``destination`` the
    serving workload's SPIFFE URI (the audit chain's source); ``decision`` is ``allow``,
    ``deny`` or ``dry_run_deny``; ``policy``/``rule`` what decided (None: no policy did).
    """

    time_ms: int
    destination: str
    source: str | None
    method: str
    path: str
    host: str = ""
    model: str | None = None
    operation: str = "other"
    decision: str = "allow"
    policy: str | None = None
    rule: int | None = None
    reason: str = ""
    status: int = 200
    dlp_findings: tuple[tuple[str, int], ...] = ()


@dataclass(frozen=True, slots=True, order=True)
class IssuedCertificate:
    """An SVID the authority signed (from the issuance ledger); times are ISO 8601 UTC."""

    identity: str
    serial: str
    issued_at: str
    not_after: str
    revoked: bool = False


@dataclass(frozen=True, slots=True, order=True)
class CaCertificate:
    """One of the authority's own certificates (``root``, ``intermediate``) and its expiry."""

    name: str
    subject: str
    not_after: str


@dataclass(frozen=True, slots=True, order=True)
class Alert:
    """A detection alert or finding recorded over the window (plugged in by adapters)."""

    time_ms: int
    severity: str
    subject: str
    message: str
    source: str = "detection"


@dataclass(frozen=True, slots=True)
class Window:
    """The review window ``[start_ms, end_ms]``; ``end_ms`` is the report's "now"."""

    start_ms: int
    end_ms: int

    def holds(self, ms: int) -> bool:
        return self.start_ms <= ms <= self.end_ms

    def to_json(self) -> dict[str, str]:
        return {"since": iso_ms(self.start_ms), "until": iso_ms(self.end_ms)}


@dataclass(frozen=True)
class MeshData:
    """Everything a review reads, sorted. ``registered`` lists (identity, namespace, workload)
    of the sidecars that registered with the control plane."""

    trust_domain: str
    resources: tuple[Resource[Any], ...]
    requests: tuple[ObservedRequest, ...] = ()
    certificates: tuple[IssuedCertificate, ...] = ()
    ca: tuple[CaCertificate, ...] = ()
    alerts: tuple[Alert, ...] = ()
    registered: tuple[tuple[str, str, str], ...] = ()
    mesh: MeshSpec = field(init=False)

    def __post_init__(self) -> None:
        resources = tuple(sorted(self.resources, key=lambda r: r.key))
        object.__setattr__(self, "resources", resources)
        for name in ("requests", "certificates", "ca", "alerts", "registered"):
            object.__setattr__(self, name, tuple(sorted(getattr(self, name))))
        spec = next((r.spec for r in resources if isinstance(r, Mesh)), MeshSpec())
        object.__setattr__(self, "mesh", spec)

    @classmethod
    def of(cls, trust_domain: str, resources: Iterable[Resource[Any]], **rest: Any) -> MeshData:
        return cls(trust_domain, tuple(resources), **{k: tuple(v) for k, v in rest.items()})

    @property
    def workloads(self) -> list[Workload]:
        return [r for r in self.resources if isinstance(r, Workload)]

    def identity_of(self, workload: Workload) -> str:
        return f"spiffe://{self.trust_domain}/ns/{workload.metadata.namespace}/sa/{workload.service_account}"

    def in_window(self, window: Window) -> list[ObservedRequest]:
        return [r for r in self.requests if window.holds(r.time_ms)]
