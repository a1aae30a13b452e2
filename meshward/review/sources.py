"""Adapters: what a state directory recorded, read into :class:`~meshward.review.data.MeshData`.

- the config store (``meshward.db``): the resources of the current generation and the
  sidecars registered with the control plane;
- the issuance ledger (same database): every SVID issued;
- the CA files: root and issuing intermediate expiry;
- the audit trail the control plane keeps (``audit/trail``): HTTP Activity records become
  :class:`ObservedRequest` (the chain's source is the serving workload), OCSF Detection
  Finding records (class 2004, what a detection engine records) become :class:`Alert`;
- alert readers registered in :data:`ALERT_READERS` (a detection package plugs in here).

Read only: nothing here writes to the state directory.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from cryptography import x509

from meshward.audit.trail import iter_trail, read_index
from meshward.config.store import ConfigStore
from meshward.identity.ledger import SvidLedger, iso
from meshward.identity.state import MeshState
from meshward.review.data import Alert, CaCertificate, IssuedCertificate, MeshData, ObservedRequest

__all__ = ["ALERT_READERS", "audit_signed", "load_mesh_data", "observed_request", "read_audit"]

#: Extra alert sources: each takes the state directory and returns alerts (any window).
ALERT_READERS: list[Callable[[Path], list[Alert]]] = []

_RULE_REF = re.compile(r"^rules\[(\d+)\]$")
_SEVERITY_NAMES = {1: "info", 2: "low", 3: "medium", 4: "high", 5: "critical", 6: "critical"}


def observed_request(event: dict[str, Any], destination: str) -> ObservedRequest | None:
    """An HTTP Activity record as an :class:`ObservedRequest` (None for other records)."""
    if event.get("class_uid") != 4002:
        return None
    request = event.get("http_request") or {}
    url = request.get("url") or {}
    authz = (event.get("authorizations") or [{}])[0]
    policy = authz.get("policy") or {}
    rule = _RULE_REF.match(str(policy.get("uid") or ""))
    extra = (event.get("unmapped") or {}).get("meshward") or {}
    caller = ((event.get("actor") or {}).get("user") or {}).get("uid") or None
    findings = extra.get("dlp_findings") or {}
    return ObservedRequest(
        time_ms=int(event.get("time") or 0),
        destination=destination,
        source=str(caller) if caller else None,
        method=str(request.get("http_method") or ""),
        path=str(url.get("path") or ""),
        host=str(url.get("hostname") or ""),
        model=str(extra["model"]) if extra.get("model") else None,
        operation=str(extra.get("op") or "other"),
        decision=str(authz.get("decision") or "deny"),
        policy=str(policy["name"]) if policy.get("name") else None,
        rule=int(rule.group(1)) if rule else None,
        reason=str(authz.get("reason") or ""),
        status=int((event.get("http_response") or {}).get("code") or 0),
        dlp_findings=tuple(sorted((str(k), int(v)) for k, v in findings.items())),
    )


def _alert(event: dict[str, Any], source: str) -> Alert | None:
    if event.get("class_uid") != 2004:
        return None
    info = event.get("finding_info") or {}
    return Alert(
        time_ms=int(event.get("time") or 0),
        severity=_SEVERITY_NAMES.get(int(event.get("severity_id") or 1), "info"),
        subject=str(info.get("title") or source),
        message=str(event.get("message") or info.get("desc") or ""),
        source="audit",
    )


def _entries(audit_dir: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    try:
        index = read_index(audit_dir / "trail")
    except OSError:
        return
    for slug, meta in sorted(index.items()):
        for record in iter_trail(audit_dir / "trail" / f"{slug}.jsonl"):
            yield str(meta.get("source", "")), record.event


def read_audit(state_dir: Path) -> tuple[list[ObservedRequest], list[Alert]]:
    requests: list[ObservedRequest] = []
    alerts: list[Alert] = []
    for source, event in _entries(Path(state_dir) / "audit"):
        request = observed_request(event, source)
        if request is not None:
            requests.append(request)
            continue
        alert = _alert(event, source)
        if alert is not None:
            alerts.append(alert)
    return requests, alerts


def audit_signed(state_dir: Path) -> bool:
    path = Path(state_dir) / "audit" / "checkpoints.jsonl"
    return path.exists() and path.stat().st_size > 0


def _ca(state: MeshState) -> list[CaCertificate]:
    out = []
    for name, path in (("root", state.root_cert_path), ("intermediate", state.intermediate_cert_path)):
        try:
            cert = x509.load_pem_x509_certificate(path.read_bytes())
        except (OSError, ValueError):
            continue
        out.append(CaCertificate(name, cert.subject.rfc4514_string(), iso(cert.not_valid_after_utc)))
    return out


def load_mesh_data(state_dir: Path) -> MeshData:
    """Everything the state directory recorded (raises OSError subclasses if there is no mesh)."""
    state = MeshState(Path(state_dir))
    trust_domain = state.trust_domain
    store = ConfigStore(state.db_path, trust_domain)
    resources = store.resources()
    registered = [(s.identity, s.namespace, s.workload) for s in store.sidecars()]
    conn = state.connect()
    try:
        certs = [
            IssuedCertificate(c.identity, c.serial, c.issued_at, c.not_after, c.revoked)
            for c in SvidLedger(conn).certificates(limit=1_000_000)
        ]
    finally:
        conn.close()
    requests, alerts = read_audit(state.path)
    for reader in ALERT_READERS:
        alerts.extend(reader(state.path))
    return MeshData.of(
        trust_domain,
        resources,
        requests=requests,
        certificates=certs,
        ca=_ca(state),
        alerts=alerts,
        registered=registered,
    )
