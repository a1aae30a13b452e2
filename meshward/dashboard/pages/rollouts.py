"""The dashboard's Rollouts page: every ModelRoute rollout the control plane runs, its step and canary weight, each check's value
against its limit, and its history (promotions, rollbacks and their reasons).

Read from ``<state>/rollouts.db`` (the control plane's rollout state); steering is
``meshward rollout promote|pause|resume|abort SERVICE``.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

from meshward.dashboard.render import Html, esc, table
from meshward.rollout.state import RolloutStore

if TYPE_CHECKING:
    from meshward.dashboard.view import MeshView

__all__ = ["render"]


def _at(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ") if ts else "-"


def render(view: MeshView, query: dict[str, str]) -> Html:
    path = view.state.path / "rollouts.db"
    if not path.exists():
        return Html('<p class="banner">No rollouts: no ModelRoute with a rollout has been applied.</p>')
    statuses = sorted(RolloutStore(path).load().values(), key=lambda s: s.route)
    if not statuses:
        return Html('<p class="banner">No rollouts: no ModelRoute with a rollout has been applied.</p>')
    parts = [
        "<h2>Rollouts</h2>",
        table(
            ("route", "service", "state", "step", "canary weight", "failed checks", "reason", "started"),
            [
                (
                    s.route,
                    s.service,
                    s.state,
                    s.step,
                    f"{s.weight}%",
                    s.failed,
                    s.reason or "-",
                    _at(s.started),
                )
                for s in statuses
            ],
            cls="rollouts",
        ),
    ]
    for s in statuses:
        parts.append(f"<h3>{esc(s.route)}: checks</h3>")
        parts.append(
            table(
                ("metric", "value", "limit", "ok"),
                [(c.get("metric"), c.get("value"), c.get("limit"), c.get("ok")) for c in s.checks],
            )
        )
        parts.append(f"<h3>{esc(s.route)}: history</h3>")
        parts.append(
            table(
                ("time", "event", "step", "weight", "reason", "generation"),
                [
                    (_at(float(h.get("time", 0))), h.get("event"), h.get("step"), h.get("weight"),
                     h.get("reason", ""), h.get("generation", ""))
                    for h in reversed(s.history)
                ],
            )
        )  # fmt: skip
    return Html("".join(parts))
