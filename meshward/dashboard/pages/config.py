"""Config: every generation with who applied it and when, a diff between any two, and the
resources in force now (as YAML)."""

from __future__ import annotations

import difflib
import json
from typing import Any

import yaml

from meshward.dashboard.render import Html, esc, form, table
from meshward.dashboard.view import MeshView

__all__ = ["generation_yaml", "render"]


def _pruned(value: Any) -> Any:
    """The document without empty fields (None, {}, []): what was written, not every default."""
    if isinstance(value, dict):
        kept = {k: _pruned(v) for k, v in value.items()}
        return {k: v for k, v in kept.items() if v not in (None, {}, [])}
    if isinstance(value, list):
        return [_pruned(v) for v in value]
    return value


def generation_yaml(view: MeshView, generation: int | None) -> str:
    """A generation's resources as one YAML stream (empty fields left out), in kind/namespace/name
    order."""
    if generation is not None and generation <= 0:
        return ""
    docs = sorted(
        (r.to_doc() for r in view.resources(generation)),
        key=lambda d: (
            d.get("kind", ""),
            d.get("metadata", {}).get("namespace", ""),
            d.get("metadata", {}).get("name", ""),
        ),
    )
    return "---\n".join(yaml.safe_dump(_pruned(json.loads(json.dumps(d))), sort_keys=False) for d in docs)


def _int(text: str | None, default: int) -> int:
    try:
        return int(text) if text else default
    except ValueError:
        return default


def render(view: MeshView, query: dict[str, str]) -> Html:
    current = view.store.generation()
    generations = view.store.history()
    a = _int(query.get("from"), max(current - 1, 0))
    b = _int(query.get("to"), current)
    known = {g.generation for g in generations} | {0}
    if a not in known or b not in known:
        diff_html = f'<p class="banner bad">No generation {esc(a if a not in known else b)}.</p>'
    else:
        diff = difflib.unified_diff(
            generation_yaml(view, a).splitlines(keepends=True),
            generation_yaml(view, b).splitlines(keepends=True),
            f"generation {a}",
            f"generation {b}",
        )
        lines = []
        for line in diff:
            cls = "add" if line.startswith("+") else "del" if line.startswith("-") else "ctx"
            lines.append(f'<span class="{cls}">{esc(line.rstrip(chr(10)))}</span>')
        diff_html = f'<pre class="diff" id="diff">{"".join(lines) or "(no difference)"}</pre>'
    rows = [
        (
            g.generation,
            g.applied_at,
            g.applied_by,
            g.source,
            ", ".join(f"{n} {action}" for action, n in sorted(g.summary.items())),
        )
        for g in reversed(generations)
    ]
    return Html(
        f"<p>Generation in force: <b>{current}</b></p>"
        + table(["generation", "applied at", "by", "source", "changes"], rows, "history")
        + "<h2>Diff</h2>"
        + form([("from", "From generation", str(a)), ("to", "To generation", str(b))], "/config", "Diff")
        + diff_html
        + "<h2>Resources in force</h2>"
        + f'<pre class="yaml">{esc(generation_yaml(view, None))}</pre>'
    )
