"""The service graph: workloads as nodes, observed calls in a window as edges.

Nodes are every Workload of the config (models marked, with versions); edges are what the
destination sidecars counted (``meshward.dashboard.traffic``): requests and requests/s, error %,
denials, DLP findings at the destination, p99 and the mTLS state. Plaintext flows and
destinations no policy protects are drawn red. The layout is computed here (callers left of
callees); app.js only shows the detail of what is clicked.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from meshward.dashboard.render import Html, esc, json_block, table
from meshward.dashboard.traffic import EdgeCounts, p99
from meshward.dashboard.view import MeshView, WorkloadNode

__all__ = ["GraphModel", "build_graph", "layers", "render"]

WINDOWS = {"1m": 60.0, "5m": 300.0, "15m": 900.0}
_NODE_W, _NODE_H, _COL, _ROW = 200, 54, 400, 90


@dataclass(slots=True)
class GraphEdge:
    source: str  # node ref
    destination: str
    counts: EdgeCounts
    rate: float | None

    @property
    def key(self) -> str:
        return f"{self.source} -> {self.destination}"

    @property
    def mtls(self) -> str:
        if self.counts.plaintext <= 0:
            return "mTLS"
        return "plaintext" if self.counts.plaintext >= self.counts.requests else "mixed"

    def to_json(self) -> dict[str, Any]:
        c = self.counts
        latency = p99(c.buckets)
        return {
            "source": self.source,
            "destination": self.destination,
            "requests": int(c.requests),
            "rps": None if self.rate is None else round(self.rate, 2),
            "error_pct": round(100 * c.errors / c.requests, 1) if c.requests else 0.0,
            "denied": int(c.denied),
            "blocked": int(c.blocked),
            "tokens": int(c.tokens),
            "p99_ms": None if latency is None else round(latency * 1000, 1),
            "mtls": self.mtls,
            "models": sorted(c.models),
            "operations": sorted(c.operations),
        }


@dataclass(slots=True)
class GraphModel:
    nodes: dict[str, WorkloadNode]
    edges: list[GraphEdge]
    unprotected: set[str]  # node refs no ALLOW/DENY policy covers while the default allows
    span: float | None


def layers(nodes: list[str], edges: list[tuple[str, str]]) -> dict[str, int]:
    """Column per node: callers left of what they call (longest path, cycles cut)."""
    layer = dict.fromkeys(nodes, 0)
    for _ in range(len(nodes)):
        changed = False
        for src, dst in edges:
            if src != dst and layer[dst] < layer[src] + 1 <= len(nodes):
                layer[dst] = layer[src] + 1
                changed = True
        if not changed:
            break
    return layer


def build_graph(view: MeshView, window: float) -> GraphModel:
    nodes = view.workloads()
    by_identity: dict[str, str] = {}
    for node in nodes.values():
        by_identity.setdefault(node.identity, node.ref)
    latest, span, counts, rates = view.traffic(window)
    edges: list[GraphEdge] = []
    for (source, destination), c in sorted(counts.items()):
        if c.requests <= 0 and c.tokens <= 0:
            continue
        src = by_identity.get(source)
        if src is None:
            src = "outside/plaintext" if source == "unknown" else source
            nodes.setdefault(src, WorkloadNode(src, "", source))
        if destination not in nodes:
            nodes[destination] = WorkloadNode(destination, "", "")
        nodes[destination].models |= c.models
        nodes[destination].operations |= c.operations
        edges.append(GraphEdge(src, destination, c, rates.get((source, destination))))
    for ref, node_counts in latest.nodes.items():
        if ref in nodes:
            nodes[ref].dlp_findings = dict(node_counts.dlp_findings)
    return GraphModel(nodes, _merge(edges), _unprotected(view, nodes), span)


def _merge(edges: list[GraphEdge]) -> list[GraphEdge]:
    """Token counts come keyed by the same (source, destination): one edge each."""
    merged: dict[tuple[str, str], GraphEdge] = {}
    for e in edges:
        have = merged.get((e.source, e.destination))
        if have is None:
            merged[(e.source, e.destination)] = e
        else:
            have.counts.add(e.counts)
            have.rate = (have.rate or 0.0) + (e.rate or 0.0) if have.rate or e.rate else None
    return list(merged.values())


def _unprotected(view: MeshView, nodes: dict[str, WorkloadNode]) -> set[str]:
    """Workloads that accept any caller: default policy allow and no policy selects them, or
    PERMISSIVE mTLS (plaintext accepted)."""
    from meshward.authz.engine import compile_engine
    from meshward.config.snapshot import WorkloadInfo
    from meshward.resources.mesh import Mesh, MeshSpec, Workload

    resources = view.resources()
    mesh = next((r.spec for r in resources if isinstance(r, Mesh)), MeshSpec())
    out: set[str] = set()
    for r in resources:
        if not isinstance(r, Workload):
            continue
        ref = f"{r.metadata.namespace}/{r.metadata.name}"
        if mesh.mtls.mode == "PERMISSIVE":
            out.add(ref)
            continue
        info = WorkloadInfo(
            r.metadata.name, r.metadata.namespace, r.service, r.service_account, dict(r.metadata.labels)
        )
        engine = compile_engine(
            resources,
            info,
            trust_domain=view.trust_domain,
            root_namespace=mesh.root_namespace,
            default_policy=mesh.default_policy,
        )
        if mesh.default_policy == "allow" and not engine.policies:
            out.add(ref)
    return {ref for ref in out if ref in nodes}


def _svg(model: GraphModel) -> Html:
    refs = sorted(model.nodes)
    layer = layers(refs, [(e.source, e.destination) for e in model.edges])
    columns: dict[int, list[str]] = {}
    for ref in refs:
        columns.setdefault(layer[ref], []).append(ref)
    pos: dict[str, tuple[int, int]] = {}
    for col, members in columns.items():
        for row, ref in enumerate(members):
            pos[ref] = (30 + col * _COL, 30 + row * _ROW)
    width = 60 + (max(columns) + 1) * _COL if columns else 400
    height = 60 + max((len(m) for m in columns.values()), default=1) * _ROW
    parts = [
        f'<svg id="graph" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" '
        'aria-label="service graph"><defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" '
        'markerWidth="8" markerHeight="8" orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z"/>'
        "</marker></defs>"
    ]
    for e in model.edges:
        (x1, y1), (x2, y2) = pos[e.source], pos[e.destination]
        ax, ay = x1 + _NODE_W, y1 + _NODE_H // 2
        bx, by = x2, y2 + _NODE_H // 2
        if e.source == e.destination:
            bx, by = x2 + _NODE_W // 2, y2 + _NODE_H
        risky = e.mtls != "mTLS" or e.destination in model.unprotected
        cls = "edge unprotected" if risky else "edge"
        data = e.to_json()
        label = f"{data['requests']} req"
        if data["denied"]:
            label += f" · {data['denied']} denied"
        parts.append(
            f'<g class="{cls}" data-edge="{esc(e.key)}" tabindex="0"><line x1="{ax}" y1="{ay}" x2="{bx}" '
            f'y2="{by}" marker-end="url(#arrow)"/><text x="{(ax + bx) // 2}" y="{(ay + by) // 2 - 6}">'
            f"{esc(label)}</text></g>"
        )
    for ref in refs:
        node = model.nodes[ref]
        x, y = pos[ref]
        kinds = ["node"]
        if node.is_model:
            kinds.append("model")
        if ref in model.unprotected:
            kinds.append("unprotected")
        if not node.running and node.service:
            kinds.append("stopped")
        sub = node.service or node.identity
        if node.is_model:
            sub = "model " + ", ".join(sorted(node.models or node.operations))
        if node.version:
            sub += f" · {node.version}"
        parts.append(
            f'<g class="{" ".join(kinds)}" data-node="{esc(ref)}" tabindex="0"><rect x="{x}" y="{y}" '
            f'width="{_NODE_W}" height="{_NODE_H}" rx="8"/><text x="{x + 10}" y="{y + 22}" class="name">'
            f'{esc(ref)}</text><text x="{x + 10}" y="{y + 42}" class="sub">{esc(sub[:34])}</text></g>'
        )
    parts.append("</svg>")
    return Html("".join(parts))


def render(view: MeshView, query: dict[str, str]) -> Html:
    window_name = query.get("window", "5m")
    window = WINDOWS.get(window_name, 300.0)
    model = build_graph(view, window)
    options = "".join(
        f'<option value="{w}"{" selected" if w == window_name else ""}>last {w}</option>' for w in WINDOWS
    )
    span = "since the sidecars started" if model.span is None else f"over the last {int(model.span)} s"
    controls = (
        f'<form method="get" action="/graph" class="filters"><label>Window <select name="window">{options}'
        f'</select></label><button>Show</button><span class="hint">counts {esc(span)}; '
        "red: plaintext or unprotected</span></form>"
    )
    edges_json = {e.key: e.to_json() for e in model.edges}
    nodes_json = {
        ref: {
            "workload": ref,
            "service": n.service,
            "identity": n.identity,
            "version": n.version,
            "model": n.is_model,
            "models": sorted(n.models),
            "ai_operations": sorted(n.operations),
            "running": n.running,
            "unprotected": ref in model.unprotected,
            "dlp_findings": {k: int(v) for k, v in sorted(n.dlp_findings.items())},
        }
        for ref, n in model.nodes.items()
    }
    rows, attrs = [], []
    for e in model.edges:
        d = edges_json[e.key]
        rows.append(
            (
                e.source,
                e.destination,
                d["requests"],
                "-" if d["rps"] is None else d["rps"],
                f"{d['error_pct']}%",
                d["denied"],
                sum(model.nodes[e.destination].dlp_findings.values()),
                "-" if d["p99_ms"] is None else f"{d['p99_ms']} ms",
                d["tokens"],
                d["mtls"],
            )
        )
        attrs.append(f' data-edge="{esc(e.key)}" data-requests="{d["requests"]}" data-denied="{d["denied"]}"')
    node_rows = [
        (
            ref,
            "model" if n.is_model else "service",
            n.version or "-",
            n.identity,
            "running" if n.running else "not running",
            "UNPROTECTED" if ref in model.unprotected else "policy enforced",
        )
        for ref, n in sorted(model.nodes.items())
    ]
    node_attrs = [f' data-node="{esc(ref)}"' for ref, _ in sorted(model.nodes.items())]
    return Html(
        controls
        + '<div class="graph-wrap">'
        + _svg(model)
        + '<aside id="detail" class="detail"><p class="hint">Click a workload or an edge.</p></aside></div>'
        + "<h2>Edges</h2>"
        + table(
            [
                "source",
                "destination",
                "requests",
                "req/s",
                "errors",
                "denied",
                "DLP findings (dest)",
                "p99",
                "tokens",
                "mTLS",
            ],
            rows,
            "edges",
            attrs,
        )
        + "<h2>Workloads</h2>"
        + table(
            ["workload", "kind", "version", "identity", "state", "protection"], node_rows, "nodes", node_attrs
        )
        + json_block("graph-data", {"nodes": nodes_json, "edges": edges_json})
    )
