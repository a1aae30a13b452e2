"""The live tap page: a filter form and a table app.js fills from ``/api/tap`` (SSE)."""

from __future__ import annotations

from meshward.dashboard.render import Html, esc, form
from meshward.dashboard.view import MeshView

__all__ = ["FILTERS", "render"]

#: Query fields of the page and of ``/api/tap`` (see :class:`meshward.dashboard.tap.TapFilter`).
FILTERS = (
    ("source", "Source"),
    ("destination", "Destination"),
    ("status", "Status"),
    ("decision", "Decision"),
)


def render(view: MeshView, query: dict[str, str]) -> Html:
    fields = [(name, label, query.get(name, "")) for name, label in FILTERS]
    head = "".join(
        f"<th>{esc(h)}</th>"
        for h in (
            "time",
            "source",
            "destination",
            "method",
            "path",
            "model",
            "operation",
            "status",
            "decision",
            "policy",
            "tokens",
            "DLP",
            "latency",
        )
    )
    return Html(
        form(fields, "/tap", "Filter")
        + '<p class="hint"><span id="tap-state">connecting…</span> · newest first · metadata only '
        "(no bodies, no header values, DLP finding types only)</p>"
        + f'<table id="tap" class="tap"><thead><tr>{head}</tr></thead><tbody></tbody></table>'
    )
