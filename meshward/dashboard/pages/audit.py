"""Audit search: the control plane's trail filtered by identity, time and decision, under the
verify state of its hash chains (:func:`meshward.audit.verify.verify_audit_dir`)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from meshward.audit.trail import read_index
from meshward.dashboard.render import Html, esc, form, table
from meshward.dashboard.view import MeshView

__all__ = ["audit_rows", "render"]

MAX_ROWS = 200


def _chains(audit_dir: Path) -> dict[str, str]:
    try:
        index = read_index(audit_dir / "trail")
    except OSError:
        return {}
    return {slug: str(meta.get("source", "?")) for slug, meta in index.items() if isinstance(meta, dict)}


def _decision(event: dict[str, Any]) -> str:
    for auth in event.get("authorizations") or []:
        if isinstance(auth, dict) and auth.get("decision"):
            return str(auth["decision"])
    return {1: "allow", 2: "deny"}.get(int(event.get("action_id") or 0), "-")


def audit_rows(audit_dir: Path, identity: str, decision: str, since: float | None) -> list[dict[str, Any]]:
    """Matching records, newest first (at most ``MAX_ROWS``)."""
    from meshward.audit.trail import iter_trail

    rows: list[dict[str, Any]] = []
    for slug, source in _chains(audit_dir).items():
        for record in iter_trail(audit_dir / "trail" / f"{slug}.jsonl"):
            event = record.event
            stamp = float(event.get("time") or 0) / 1000
            if since is not None and stamp < since:
                continue
            actor = str(((event.get("actor") or {}).get("user") or {}).get("uid") or "")
            if identity and identity not in actor and identity not in source:
                continue
            verdict = _decision(event)
            if decision and verdict != decision:
                continue
            request = event.get("http_request") or {}
            policy = next(
                (
                    a["policy"].get("name", "")
                    for a in event.get("authorizations") or []
                    if isinstance(a, dict) and isinstance(a.get("policy"), dict)
                ),
                "",
            )
            rows.append(
                {
                    "time": stamp,
                    "reporter": source,
                    "seq": record.seq,
                    "actor": actor,
                    "what": f"{request.get('http_method', '')} {(request.get('url') or {}).get('path', '')}".strip()
                    or str(event.get("message") or event.get("api", {}).get("operation", "")),
                    "status": (event.get("http_response") or {}).get("code", ""),
                    "decision": verdict,
                    "policy": policy,
                }
            )
    rows.sort(key=lambda r: (-r["time"], r["reporter"], -r["seq"]))
    return rows[:MAX_ROWS]


def render(view: MeshView, query: dict[str, str]) -> Html:
    from meshward.audit.verify import verify_audit_dir

    audit_dir = view.state.path / "audit"
    identity = query.get("identity", "").strip()
    decision = query.get("decision", "").strip()
    minutes = query.get("minutes", "").strip()
    since = time.time() - float(minutes) * 60 if minutes.replace(".", "", 1).isdigit() else None
    fields = [
        ("identity", "Identity", identity),
        ("decision", "Decision", decision),
        ("minutes", "Last minutes", minutes),
    ]
    if not (audit_dir / "trail").is_dir():
        return Html(form(fields, "/audit", "Search") + '<p class="banner">No audit trail yet.</p>')
    report = verify_audit_dir(audit_dir)
    if report.ok:
        banner = (
            f'<p class="banner ok" id="verify">Chain verified: {report.chains} chains, {report.records} records, '
            f"{report.checkpoints} signed checkpoints.</p>"
        )
    else:
        problems = "".join(f"<li>{esc(p)}</li>" for p in report.problems[:20])
        banner = f'<div class="banner bad" id="verify">Chain verification FAILED:<ul>{problems}</ul></div>'
    rows = audit_rows(audit_dir, identity, decision, since)
    return Html(
        form(fields, "/audit", "Search")
        + banner
        + table(
            ["time (UTC)", "reporter", "seq", "identity", "request / event", "status", "decision", "policy"],
            [
                (
                    time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(r["time"])),
                    r["reporter"],
                    r["seq"],
                    r["actor"] or "-",
                    r["what"],
                    r["status"],
                    r["decision"],
                    r["policy"] or "-",
                )
                for r in rows
            ],
            "audit",
        )
    )
