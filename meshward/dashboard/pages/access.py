"""Who can call what: every workload identity × every service, decided by ``meshward check``'s
engine (:func:`meshward.mesh.check.decide_call`) for one probe request, with the calls
observed on the same pair next to each decision."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from meshward.dashboard.render import Html, esc, form, json_block
from meshward.dashboard.view import MeshView

__all__ = ["AccessCell", "access_matrix", "render"]

DEFAULT_PROBE = {"method": "POST", "path": "/v1/chat/completions", "model": ""}


@dataclass(slots=True)
class AccessCell:
    source: str  # SPIFFE URI
    target: str  # service.namespace
    decision: str  # allow | deny | reject
    reason: str
    policy: str | None
    observed: int = 0
    observed_denied: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "target": self.target,
            "decision": self.decision,
            "policy": self.policy,
            "reason": self.reason,
            "observed": self.observed,
            "observed_denied": self.observed_denied,
        }


def access_matrix(
    view: MeshView, method: str, path: str, model: str | None
) -> tuple[list[str], list[str], dict[tuple[str, str], AccessCell]]:
    """(sources, targets, cells) for the current config and one probe request."""
    from meshward.mesh.check import CheckError, decide_call

    resources = view.resources()
    nodes = view.workloads()
    sources = sorted({n.identity for n in nodes.values() if n.identity})
    targets = sorted({n.service for n in nodes.values() if n.service})
    service_of = {ref: n.service for ref, n in nodes.items()}
    observed: dict[tuple[str, str], tuple[int, int]] = {}
    try:
        sample = view.sample()
        for (source, destination), counts in sample.edges.items():
            key = (source, service_of.get(destination, destination))
            seen, denied = observed.get(key, (0, 0))
            observed[key] = (seen + int(counts.requests), denied + int(counts.denied))
    except OSError:
        pass
    cells: dict[tuple[str, str], AccessCell] = {}
    for source in sources:
        for target in targets:
            try:
                report, results = decide_call(
                    resources, view.trust_domain, source, target, method, path, model=model or None
                )
            except CheckError as exc:
                cells[(source, target)] = AccessCell(source, target, "reject", str(exc), None)
                continue
            policy = next((d.policy for _, d in results if d.policy and d.allowed == report["allowed"]), None)
            reason = report.get("reason") or "; ".join(d.reason for _, d in results)
            seen, denied = observed.get((source, target), (0, 0))
            cells[(source, target)] = AccessCell(
                source, target, report["decision"], reason, policy, seen, denied
            )
    return sources, targets, cells


def render(view: MeshView, query: dict[str, str]) -> Html:
    probe = {k: query.get(k) or v for k, v in DEFAULT_PROBE.items()}
    sources, targets, cells = access_matrix(view, probe["method"], probe["path"], probe["model"])
    head = "<th>caller \\ service</th>" + "".join(f"<th>{esc(t)}</th>" for t in targets)
    rows = []
    for source in sources:
        tds = []
        for target in targets:
            c = cells[(source, target)]
            seen = f"{c.observed} seen" + (f", {c.observed_denied} denied" if c.observed_denied else "")
            tds.append(
                f'<td class="cell {esc(c.decision)}" data-source="{esc(source)}" data-target="{esc(target)}" '
                f'data-decision="{esc(c.decision)}" title="{esc(c.reason)}"><b>{esc(c.decision.upper())}</b>'
                f'<small>{esc(c.policy or "")}</small><small class="seen">{esc(seen)}</small></td>'
            )
        rows.append(f"<tr><th>{esc(source)}</th>{''.join(tds)}</tr>")
    fields = [
        ("method", "Method", probe["method"]),
        ("path", "Path", probe["path"]),
        ("model", "Model", probe["model"]),
    ]
    return Html(
        form(fields, "/access", "Decide")
        + f'<p class="hint">Each cell: would <code>{esc(probe["method"])} {esc(probe["path"])}</code> from the row\'s '
        "identity to the column's service be allowed (the engine of <code>meshward check</code>), "
        "and the calls observed on that pair.</p>"
        + f'<table class="matrix"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'
        + json_block("access-data", [c.to_json() for c in cells.values()])
    )
