"""The page registry: every dashboard page, in navigation order.

A page is a function ``(view, query) -> Html``. Pages owned by other packages plug in by
package name: :func:`plugin_page` renders ``<package>.dashboard.render(view, query)`` when the
package ships that module, and says "not available" when the package is absent, so the alerts
(``meshward.detection``) and rollouts (``meshward.rollout``) pages light up when those land.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass

from meshward.dashboard.pages import access, audit, config, graph, identity, tap
from meshward.dashboard.render import Html, esc
from meshward.dashboard.view import MeshView

__all__ = ["PAGES", "Page", "page", "plugin_page"]

Render = Callable[[MeshView, dict[str, str]], Html]


@dataclass(frozen=True, slots=True)
class Page:
    slug: str
    title: str
    render: Render


def plugin_page(package: str, what: str) -> Render:
    """A page rendered by ``<package>.dashboard`` (its ``render(view, query) -> str``), if present."""

    def render(view: MeshView, query: dict[str, str]) -> Html:
        try:
            present = importlib.util.find_spec(package) is not None
        except (ImportError, ValueError):
            present = False
        if not present:
            return Html(
                f'<p class="banner unavailable">Not available: this Meshward has no {esc(what)} '
                f"(package <code>{esc(package)}</code>).</p>"
            )
        try:
            module = importlib.import_module(f"{package}.dashboard")
        except ImportError:
            return Html(
                f'<p class="banner unavailable">Not available: <code>{esc(package)}</code> is installed '
                "but provides no dashboard page.</p>"
            )
        return Html(str(module.render(view, query)))

    return render


PAGES: list[Page] = [
    Page("graph", "Service graph", graph.render),
    Page("tap", "Live tap", tap.render),
    Page("access", "Access", access.render),
    Page("alerts", "Alerts", plugin_page("meshward.detection", "threat detection")),
    Page("audit", "Audit", audit.render),
    Page("rollouts", "Rollouts", plugin_page("meshward.rollout", "rollouts")),
    Page("identity", "Identity", identity.render),
    Page("config", "Config", config.render),
]


def page(slug: str) -> Page | None:
    return next((p for p in PAGES if p.slug == slug), None)
