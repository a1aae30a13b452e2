"""``meshward status``: the mesh as it is now, in DESIGN.md §5's JSON schema (plus a few fields).

Read from the state directory only (no control plane call is needed): ``control.json``, the
runner's ``mesh/run.json``, the config store (generation, each sidecar's ACK/NACK) and each
sidecar's cached SVID (its ``not_after``), plus the CA expiry warnings of the identity service.
Extra fields beyond the contract: ``warnings``, per workload ``state``, ``restarts``,
``last_exit``, ``message`` and ``config`` (the generation its sidecar runs, or a NACK's reason).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cryptography import x509

from meshward.config.store import ConfigStore
from meshward.control.client import pid_alive, read_control_info
from meshward.identity.issuance import IdentityService
from meshward.identity.ledger import iso
from meshward.identity.state import MeshState
from meshward.mesh.records import WorkloadRecord, read_run
from meshward.mesh.scrape import targets_path

__all__ = ["align_columns", "mesh_status", "render_status"]


def _cert_not_after(sidecar_dir: str) -> str | None:
    if not sidecar_dir:
        return None
    try:
        data = (Path(sidecar_dir) / "svid.pem").read_bytes()
        leaf = x509.load_pem_x509_certificates(data[data.find(b"-----BEGIN CERTIFICATE-----") :])[0]
    except (OSError, ValueError):
        return None
    return iso(leaf.not_valid_after_utc)


def _workload(w: WorkloadRecord, acks: dict[str, Any]) -> dict[str, Any]:
    app_alive = w.pid is not None and pid_alive(w.pid)
    sidecar_alive = w.sidecar_pid is not None and pid_alive(w.sidecar_pid)
    ack = acks.get(w.ref)
    return {
        "name": w.name,
        "namespace": w.namespace,
        "service": w.service,
        "identity": w.identity,
        "app": w.app,
        "inbound": w.inbound,
        "outbound": w.outbound,
        "admin": w.admin,
        "pid": w.pid if app_alive else None,
        "sidecar_pid": w.sidecar_pid if sidecar_alive else None,
        "cert_not_after": _cert_not_after(w.sidecar_dir),
        "ready": bool(w.ready and sidecar_alive and (app_alive or w.pid is None)),
        "state": w.state,
        "type": w.type,
        "restarts": w.restarts,
        "last_exit": w.last_exit,
        "message": w.message,
        "config": None if ack is None else ack.summary(),
    }


def mesh_status(state: MeshState) -> dict[str, Any]:
    """The status document; raises :class:`~meshward.identity.state.MeshStateError` without a mesh."""
    trust_domain = state.trust_domain
    store = ConfigStore(state.db_path, trust_domain)
    control = read_control_info(state.path)
    run = read_run(state.path)
    if run is not None and not pid_alive(run.supervisor_pid):
        run = None  # a runner that died: its record is stale (`meshward down` cleans up)
    acks = store.acks()
    warnings: list[str] = []
    with contextlib.closing(IdentityService(state)) as identity:
        warnings.extend(identity.expiry_warnings())
    workloads = [_workload(w, acks) for w in run.workloads] if run else []
    for w in workloads:
        if w["config"] and w["config"]["status"] == "NACK":
            warnings.append(
                f"{w['namespace']}/{w['name']}: sidecar rejected generation {w['config']['generation']}: "
                f"{w['config']['reason']}"
            )
    others = [
        {"sidecar": sidecar, **ack.summary()} for sidecar, ack in sorted(acks.items()) if "#" in sidecar
    ]
    return {
        "trust_domain": trust_domain,
        "control": {
            "url": control.url if control else None,
            "pid": control.pid if control else None,
            "generation": store.generation(),
        },
        "workloads": workloads,
        "sidecars": others,
        "runner": None
        if run is None
        else {"pid": run.supervisor_pid, "state": run.state, "error": run.error},
        "metrics": {"prometheus_targets": str(targets_path(state.path)) if run else None},
        "warnings": warnings,
    }


def align_columns(rows: Sequence[Sequence[str]]) -> list[str]:
    """Rows (the header first) as text lines, each column as wide as its widest cell."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in rows]


def _job_state(w: dict[str, Any]) -> str:
    """A job's READY cell: running, or how it ended (``succeeded (0)``, ``failed (2)``)."""
    code = w.get("last_exit")
    return f"{w['state']} ({code})" if code is not None and w["state"] != "running" else w["state"]


def render_status(doc: dict[str, Any]) -> str:
    control = doc["control"]
    lines = [f"mesh {doc['trust_domain']}"]
    if control["url"]:
        lines.append(
            f"control plane  {control['url']} (pid {control['pid']}), generation {control['generation']}"
        )
    else:
        lines.append(f"control plane  not running; stored generation {control['generation']}")
    if doc["workloads"]:
        rows = [
            (
                "WORKLOAD",
                "READY",
                "IDENTITY",
                "APP",
                "INBOUND",
                "OUTBOUND",
                "ADMIN",
                "CONFIG",
                "RESTARTS",
                "CERT UNTIL",
            )
        ]
        for w in doc["workloads"]:
            cfg = w["config"]
            config = "-" if cfg is None else f"{cfg['status']} {cfg['generation']}"
            rows.append(
                (
                    f"{w['namespace']}/{w['name']}",
                    "yes" if w["ready"] else _job_state(w) if w.get("type") == "Job" else w["state"],
                    w["identity"],
                    w["app"] or "-",
                    w["inbound"] or "-",
                    w["outbound"] or "-",
                    w["admin"] or "-",
                    config,
                    str(w["restarts"]),
                    w["cert_not_after"] or "-",
                )
            )
        lines += align_columns(rows)
    else:
        lines.append("no workloads running (start them with `meshward up -f MESH.yaml`)")
    for w in doc["workloads"]:
        if w["message"] and not w["ready"] and w["state"] != "succeeded":
            lines.append(f"{w['namespace']}/{w['name']}: {w['message']}")
    targets = (doc.get("metrics") or {}).get("prometheus_targets")
    if targets:
        lines.append(f"metrics  each ADMIN port serves /stats/prometheus; Prometheus file_sd: {targets}")
    lines += [f"warning: {text}" for text in doc["warnings"]]
    return "\n".join(lines)
