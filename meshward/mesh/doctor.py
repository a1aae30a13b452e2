"""``meshward doctor``: the health of a local mesh, one line per check (linkerd check's role).

Each check gives ``pass``, ``warn`` or ``fail`` with what it saw and, unless it passed, the
fix. The checks read the state directory, the run record and the running control plane; they
change nothing. :func:`run_checks` stops early only where later checks cannot mean anything
(no mesh in the state directory).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import email.utils
import http.client
import socket
import ssl
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from meshward.control.client import ControlUnavailable, operator_client, read_control_info
from meshward.identity.state import MeshState
from meshward.mesh.records import read_run
from meshward.mesh.status import mesh_status
from meshward.tls.contexts import client_context_files

__all__ = ["CLOCK_SKEW_SECONDS", "CheckResult", "run_checks"]

CLOCK_SKEW_SECONDS = 5.0
SVID_WARN_SECONDS = 300  # an SVID renewed at half-life of 1 h never gets this close

Outcome = Literal["pass", "warn", "fail"]


@dataclass(frozen=True, slots=True)
class CheckResult:
    name: str
    outcome: Outcome
    detail: str
    fix: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"check": self.name, "outcome": self.outcome, "detail": self.detail, "fix": self.fix}


def _state(state: MeshState) -> CheckResult:
    if state.exists():
        return CheckResult("mesh state", "pass", f"mesh {state.trust_domain!r} in {state.path}")
    return CheckResult(
        "mesh state", "fail", f"no mesh in {state.path}", f"meshward up -f MESH.yaml --state {state.path}"
    )


def _control(state: MeshState) -> tuple[CheckResult, dict[str, Any] | None]:
    fix = f"start the mesh: meshward up -f MESH.yaml --state {state.path} (or `meshward control`)"
    if read_control_info(state.path) is None:
        return CheckResult("control plane", "fail", "no control plane runs for this state", fix), None
    client = operator_client(state, timeout=5.0)
    assert client is not None
    try:
        with client:
            doc = client.request("GET", "/v1/status")[1]
    except (ControlUnavailable, OSError) as exc:
        return CheckResult("control plane", "fail", f"not reachable: {exc}", fix), None
    detail = f"{client.url} answers over mTLS, generation {doc.get('generation')}"
    return CheckResult("control plane", "pass", detail), doc


def _clock(state: MeshState) -> CheckResult:
    """The control plane's clock (its Date header) against ours: certificates need both right."""
    info = read_control_info(state.path)
    if info is None:
        return CheckResult("clock", "warn", "not compared (no control plane runs)", "start the mesh")
    cert, key, bundle = state.ensure_operator_cert()
    url = urllib.parse.urlsplit(info.url)
    conn = http.client.HTTPSConnection(
        url.hostname or "127.0.0.1",
        url.port,
        context=client_context_files(bundle.read_bytes(), cert, key),
        timeout=5,
    )
    try:
        conn.request("GET", "/healthz")
        response = conn.getresponse()
        response.read()
        date = response.getheader("Date")
    except (OSError, ssl.SSLError, http.client.HTTPException) as exc:
        return CheckResult("clock", "warn", f"not compared: {exc}", "check the control plane")
    finally:
        conn.close()
    if not date:
        return CheckResult("clock", "warn", "the control plane sent no Date header")
    skew = abs(email.utils.parsedate_to_datetime(date).timestamp() - dt.datetime.now(dt.UTC).timestamp())
    if skew > CLOCK_SKEW_SECONDS:
        return CheckResult(
            "clock", "fail", f"this clock and the control plane's differ by {skew:.0f}s", "sync clocks (NTP)"
        )
    return CheckResult("clock", "pass", f"within {CLOCK_SKEW_SECONDS:.0f}s of the control plane's")


def _certificates(state: MeshState, status: dict[str, Any]) -> list[CheckResult]:
    results = []
    warnings = [w for w in status["warnings"] if " CA " in f" {w} "]
    if warnings:
        outcome: Outcome = "fail" if any("expired" in w for w in warnings) else "warn"
        results.append(CheckResult("CA certificates", outcome, "; ".join(warnings), "see each line"))
    else:
        results.append(CheckResult("CA certificates", "pass", "root and intermediate valid for 30+ days"))
    now = dt.datetime.now(dt.UTC)
    for w in status["workloads"]:
        end = w.get("cert_not_after")
        if not end or w.get("sidecar_pid") is None:
            continue
        left = (dt.datetime.fromisoformat(end.replace("Z", "+00:00")) - now).total_seconds()
        name = f"SVID {w['namespace']}/{w['name']}"
        if left <= 0:
            results.append(CheckResult(name, "fail", f"expired at {end}", "restart the workload's sidecar"))
        elif left < SVID_WARN_SECONDS:
            results.append(
                CheckResult(
                    name, "warn", f"expires in {left:.0f}s and was not renewed", "check its sidecar log"
                )
            )
    return results


def _sidecars(control: dict[str, Any], workloads: set[str] | None) -> CheckResult:
    """``workloads``: the ``ns/name`` of every Workload in the config (None: unknown)."""
    generation = control.get("generation")
    rejected, behind, orphans = [], [], []
    for s in control.get("sidecars", []):
        ack = s.get("ack")
        if workloads is not None and "#" not in s["sidecar"] and s["sidecar"] not in workloads:
            orphans.append(s["sidecar"])  # its Workload was deleted; whatever it says is moot
            continue
        if ack is None or ack["generation"] < (generation or 0):
            behind.append(s["sidecar"])
        elif ack["status"] == "NACK":
            rejected.append(f"{s['sidecar']}: {ack['reason']}")
    if rejected:
        return CheckResult(
            "sidecar config", "fail", "rejected: " + "; ".join(rejected), "fix the resource named, then apply"
        )
    if orphans:
        return CheckResult(
            "sidecar config",
            "warn",
            f"sidecars of deleted Workloads still run: {', '.join(orphans)}",
            "restart the mesh (`meshward down`, then `meshward up`) to stop them",
        )
    if behind:
        return CheckResult(
            "sidecar config",
            "warn",
            f"not yet on generation {generation}: {', '.join(behind)}",
            "wait a moment, or see `meshward status`",
        )
    count = len(control.get("sidecars", []))
    return CheckResult("sidecar config", "pass", f"all {count} sidecars ACKed generation {generation}")


def _workloads(status: dict[str, Any]) -> CheckResult:
    failing = [
        f"{w['namespace']}/{w['name']} ({w['state']})"
        for w in status["workloads"]
        if not w["ready"] and w["state"] not in ("running", "succeeded")
    ]
    if failing:
        return CheckResult(
            "workloads", "warn", "not ready: " + ", ".join(failing), "see `meshward status` and the app's log"
        )
    return CheckResult("workloads", "pass", f"{len(status['workloads'])} workloads ready, running or done")


def _redis(state: MeshState, resources: list[Any]) -> list[CheckResult]:
    urls = sorted(
        {
            r.spec.backend
            for r in resources
            if r.kind == "RateLimitPolicy" and str(getattr(r.spec, "backend", "")).startswith("redis")
        }
    )
    results = []
    for url in urls:
        parts = urllib.parse.urlsplit(url)
        where = f"{parts.hostname or '127.0.0.1'}:{parts.port or 6379}"
        try:
            with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 6379), timeout=2):
                results.append(CheckResult(f"redis {where}", "pass", "reachable"))
        except OSError as exc:
            results.append(
                CheckResult(
                    f"redis {where}", "fail", f"unreachable: {exc}", "start Redis, or fix the backend URL"
                )
            )
    return results


def _ports(state: MeshState) -> CheckResult:
    from meshward.mesh.workload import CONTROL_PORT, port_free

    if read_control_info(state.path) is not None:
        return CheckResult("ports", "pass", "in use by this mesh")
    if port_free(CONTROL_PORT):
        return CheckResult("ports", "pass", f"control plane port {CONTROL_PORT} is free")
    return CheckResult(
        "ports",
        "warn",
        f"port {CONTROL_PORT} is taken by another process",
        "`meshward up` picks a free port; pass --control-port to choose one",
    )


def run_checks(state: MeshState, resources: Callable[[], list[Any]]) -> list[CheckResult]:
    """Every check, in order; ``resources`` reads the current config (for the Redis check)."""
    first = _state(state)
    if first.outcome == "fail":
        return [first, _ports(state)]
    results = [first]
    control, doc = _control(state)
    results.append(control)
    results.append(_clock(state))
    status = mesh_status(state)
    results += _certificates(state, status)
    config: list[Any] | None = None
    with contextlib.suppress(Exception):
        config = resources()
    if doc is not None:
        names = (
            None
            if config is None
            else {f"{r.metadata.namespace}/{r.metadata.name}" for r in config if r.kind == "Workload"}
        )
        results.append(_sidecars(doc, names))
    if read_run(state.path) is not None:
        results.append(_workloads(status))
    results += _redis(state, config or [])
    results.append(_ports(state))
    return results
