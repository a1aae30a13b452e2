"""The page registry: every dashboard page, in navigation order.

A page is a function ``(view, query) -> Html``; each lives in a module of this package (the
alerts and rollouts pages read :mod:`meshward.detection` and :mod:`meshward.rollout`, which sit
below the dashboard in the package layers).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from meshward.dashboard.pages import access, alerts, audit, config, graph, identity, rollouts, tap
from meshward.dashboard.render import Html
from meshward.dashboard.view import MeshView

__all__ = ["PAGES", "Page", "page"]

Render = Callable[[MeshView, dict[str, str]], Html]


@dataclass(frozen=True, slots=True)
class Page:
    slug: str
    title: str
    render: Render


PAGES: list[Page] = [
    Page("graph", "Service graph", graph.render),
    Page("tap", "Live tap", tap.render),
    Page("access", "Access", access.render),
    Page("alerts", "Alerts", alerts.render),
    Page("audit", "Audit", audit.render),
    Page("rollouts", "Rollouts", rollouts.render),
    Page("identity", "Identity", identity.render),
    Page("config", "Config", config.render),
]


def page(slug: str) -> Page | None:
    return next((p for p in PAGES if p.slug == slug), None)
