"""The dashboard's Alerts page: the mesh's detection alerts, newest first, with their evidence, and the quarantines they caused.

Read from ``<state>/detection.db`` (the control plane's store); nothing here changes state
(acknowledging is ``meshward alerts ack ID``).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from meshward.dashboard.render import Html, esc, table
from meshward.detection.store import DetectionStore

if TYPE_CHECKING:
    from meshward.dashboard.view import MeshView

__all__ = ["render"]

MAX_ALERTS = 200


def render(view: MeshView, query: dict[str, str]) -> Html:
    path = view.state.path / "detection.db"
    if not path.exists():
        return Html('<p class="banner">No alerts yet: the control plane has not raised any.</p>')
    store = DetectionStore(path)
    state = query.get("state", "")
    alerts = [a for a in store.alerts(limit=MAX_ALERTS) if not state or a.state == state]
    rows = [
        (
            a.id,
            a.updated,
            a.detector,
            a.severity,
            a.subject,
            a.state,
            a.count,
            a.summary,
            json.dumps(a.evidence, sort_keys=True)[:300],
            a.response or "-",
        )
        for a in alerts
    ]
    quarantines = []
    for q in store.quarantines():
        doc = q.to_json()
        quarantines.append(
            (q.id, q.subject, q.state, q.alert_id, f"{q.namespace}/{q.name}", doc.get("expires", ""))
        )
    return Html(
        "<h2>Alerts</h2>"
        + table(
            (
                "id",
                "updated",
                "detector",
                "severity",
                "subject",
                "state",
                "count",
                "summary",
                "evidence",
                "response",
            ),
            rows,
            cls="alerts",
        )
        + "<h2>Quarantines</h2>"
        + table(("id", "subject", "state", "alert", "policy", "expires"), quarantines, cls="quarantines")
        + f"<p>{esc(len(rows))} alerts shown (at most {MAX_ALERTS}); acknowledge one with "
        "<code>meshward alerts ack ID</code>.</p>"
    )
