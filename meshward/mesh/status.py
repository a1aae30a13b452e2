"""``meshward status``: the mesh as it is now, in DESIGN.md §5's JSON schema (plus a few fields).

Read from the state directory only (no control plane call is needed): ``control.json``, the
runner's ``mesh/run.json``, the config store (generation, each sidecar's ACK/NACK) and each
sidecar's cached SVID (its ``not_after``), plus the CA expiry warnings of the identity service.
Extra fields beyond the contract: ``warnings``, ``outbound_traffic_policy`` (REGISTRY_ONLY or a
loud ALLOW_ANY), per workload ``state``, ``restarts``, ``last_exit``, ``message`` and ``config``
(the generation its sidecar runs, or a NACK's reason); in isolation mode ``address``, ``netns``
and ``app_uid``; when the mesh is PERMISSIVE, ``plaintext`` (plaintext connections by source
address, read from each sidecar's admin metrics) with a warning per source, to follow a
PERMISSIVE → STRICT migration.
"""

from __future__ import annotations

import contextlib
import re
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cryptography import x509

from meshward.config.build import mesh_spec
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
        "version": w.version,
        "identity": w.identity,
        "app": w.app,
        "inbound": w.inbound,
        "outbound": w.outbound,
        "admin": w.admin,
        **({"address": w.address, "netns": w.netns, "app_uid": w.app_uid} if w.address else {}),
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
        "sidecar_workers": _sidecar_workers(w, acks, sidecar_alive),
    }


def _sidecar_workers(w: WorkloadRecord, acks: dict[str, Any], alive: bool) -> list[dict[str, Any]]:
    """Each worker process of the sidecar (``spec.sidecar.workers``), with the generation it took:
    worker 0 answers the control plane as the workload's sidecar, worker N as ``<ref>#wN``."""
    pids: list[int | None] = list(w.sidecar_worker_pids) or [w.sidecar_pid]
    rows = []
    for index, pid in enumerate(pids):
        ack = acks.get(w.ref if index == 0 else f"{w.ref}#w{index}")
        rows.append(
            {
                "worker": index,
                "pid": pid if alive and pid is not None and pid_alive(pid) else None,
                "config": None if ack is None else ack.summary(),
            }
        )
    return rows


_PLAINTEXT = re.compile(r'^meshward_proxy_plaintext_connections_total\{source="([^"]*)"\} ([0-9.e+]+)$', re.M)


def plaintext_sources(admin: str) -> dict[str, int]:
    """A sidecar's plaintext connections by source (its admin metrics; {} if unreachable)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(f"http://{admin}/stats/prometheus", timeout=1.0) as resp:
            text = resp.read(4 * 1024 * 1024).decode("utf-8", "replace")
    except (OSError, ValueError):
        return {}
    return {source: int(float(n)) for source, n in _PLAINTEXT.findall(text)}


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
    if workloads and any(m.spec.mtls.mode == "PERMISSIVE" for m in store.get("Mesh")):
        for w in workloads:  # PERMISSIVE → STRICT: who still sends plaintext, per source
            w["plaintext"] = plaintext_sources(w["admin"]) if w["admin"] and w["sidecar_pid"] else {}
            for source, n in sorted(w["plaintext"].items()):
                warnings.append(
                    f"{w['namespace']}/{w['name']}: {n} plaintext connections from {source} (PERMISSIVE; "
                    "STRICT would refuse them)"
                )
    for w in workloads:
        if w["config"] and w["config"]["status"] == "NACK":
            warnings.append(
                f"{w['namespace']}/{w['name']}: sidecar rejected generation {w['config']['generation']}: "
                f"{w['config']['reason']}"
            )
        for worker in w["sidecar_workers"][1:]:
            if worker["config"] and worker["config"]["status"] == "NACK":
                warnings.append(
                    f"{w['namespace']}/{w['name']}: sidecar worker {worker['worker']} rejected generation "
                    f"{worker['config']['generation']}: {worker['config']['reason']}"
                )
    outbound = mesh_spec(store.resources(), trust_domain).outbound_traffic_policy.mode
    if outbound == "ALLOW_ANY":
        warnings.append(
            "outboundTrafficPolicy is ALLOW_ANY: workloads may call ANY external host, unchecked "
            "(use REGISTRY_ONLY with ExternalService + EgressPolicy; see docs/egress.md)"
        )
    workers = {  # a sidecar's extra workers are shown with their workload (sidecar_workers)
        f"{w.ref}#w{i}" for w in (run.workloads if run else []) for i in range(1, len(w.sidecar_worker_pids))
    }
    others = [
        {"sidecar": sidecar, **ack.summary()}
        for sidecar, ack in sorted(acks.items())
        if "#" in sidecar and sidecar not in workers
    ]
    return {
        "trust_domain": trust_domain,
        "control": {
            "url": control.url if control else None,
            "pid": control.pid if control else None,
            "generation": store.generation(),
        },
        "workloads": workloads,
        "gateways": [
            {
                "name": g.name,
                "namespace": g.namespace,
                "address": g.address,
                "url": f"{g.scheme}://{g.address}" if g.address else None,
                "identity": g.identity,
                "admin": g.admin,
                "pid": g.pid,
                "ready": g.ready,
                "state": g.state,
                "restarts": g.restarts,
            }
            for g in (run.gateways if run else [])
        ],
        "sidecars": others,
        "runner": None
        if run is None
        else {"pid": run.supervisor_pid, "state": run.state, "error": run.error},
        "outbound_traffic_policy": outbound,
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
                "VERSION",
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
                    w.get("version") or "-",
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
    if doc.get("gateways"):
        gw_rows: list[tuple[str, ...]] = [("GATEWAY", "READY", "IDENTITY", "URL", "RESTARTS")]
        for g in doc["gateways"]:
            gw_rows.append(
                (
                    f"{g['namespace']}/{g['name']}",
                    "yes" if g["ready"] else g["state"],
                    g["identity"],
                    g["url"] or "-",
                    str(g["restarts"]),
                )
            )
        lines += align_columns(gw_rows)
    for w in doc["workloads"]:
        if w["message"] and not w["ready"] and w["state"] != "succeeded":
            lines.append(f"{w['namespace']}/{w['name']}: {w['message']}")
    targets = (doc.get("metrics") or {}).get("prometheus_targets")
    if targets:
        lines.append(f"metrics  each ADMIN port serves /stats/prometheus; Prometheus file_sd: {targets}")
    lines += [f"warning: {text}" for text in doc["warnings"]]
    return "\n".join(lines)
