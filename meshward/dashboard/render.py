"""HTML building blocks for the dashboard pages: escaping by default, one layout, tables.

Every value is escaped unless it is :class:`Html` (markup this package built). Pages carry no
inline script or style (the Content-Security-Policy forbids both): behaviour is in
``static/app.js``, looks in ``static/app.css``; data for scripts rides in
``<script type="application/json">`` blocks, which are never executed.
"""

from __future__ import annotations

import html
import json
from collections.abc import Iterable, Sequence
from typing import Any

__all__ = ["Html", "esc", "form", "json_block", "layout", "table"]


class Html(str):
    """Markup that is already safe (built here from escaped parts)."""

    __slots__ = ()


def esc(value: object) -> Html:
    if isinstance(value, Html):
        return value
    return Html(html.escape("" if value is None else str(value), quote=True))


def table(
    headers: Sequence[str], rows: Iterable[Sequence[object]], cls: str = "", row_attrs: Sequence[str] = ()
) -> Html:
    """A table; ``row_attrs[i]`` (already-built attributes) is added to row ``i``."""
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = []
    for i, row in enumerate(rows):
        attrs = row_attrs[i] if i < len(row_attrs) else ""
        cells = "".join(f"<td>{esc(c)}</td>" for c in row)
        body.append(f"<tr{attrs}>{cells}</tr>")
    if not body:
        body.append(f'<tr><td colspan="{len(headers)}" class="empty">nothing yet</td></tr>')
    cls_attr = f' class="{esc(cls)}"' if cls else ""
    return Html(f"<table{cls_attr}><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>")


def form(fields: Sequence[tuple[str, str, str]], action: str, button: str = "Apply") -> Html:
    """A GET form: (name, label, current value) per field. GET forms change nothing."""
    inputs = "".join(
        f'<label>{esc(label)} <input name="{esc(name)}" value="{esc(value)}"></label>'
        for name, label, value in fields
    )
    return Html(
        f'<form method="get" action="{esc(action)}" class="filters">{inputs}<button>{esc(button)}</button></form>'
    )


def json_block(element_id: str, data: Any) -> Html:
    """Data for app.js: JSON in a non-executed script element (``<`` escaped so it cannot end it)."""
    text = json.dumps(data, separators=(",", ":")).replace("<", "\\u003c").replace(">", "\\u003e")
    return Html(f'<script type="application/json" id="{esc(element_id)}">{text}</script>')


def layout(title: str, active: str, nav: Sequence[tuple[str, str]], body: str, csrf: str, mesh: str) -> bytes:
    current = ' class="active" aria-current="page"'
    links = "".join(
        f'<a href="/{esc(slug)}"{current if slug == active else ""}>{esc(name)}</a>' for slug, name in nav
    )
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="csrf-token" content="{esc(csrf)}">
<title>{esc(title)} · Meshward</title>
<link rel="stylesheet" href="/static/app.css">
<link rel="icon" href="/static/favicon.svg" type="image/svg+xml">
<script src="/static/app.js" defer></script>
</head><body data-page="{esc(active)}">
<header><span class="brand">Meshward</span><span class="mesh">{esc(mesh)}</span><nav>{links}</nav>
<form method="post" action="/logout" class="logout"><input type="hidden" name="csrf" value="{esc(csrf)}"><button>Log out</button></form>
</header>
<main><h1>{esc(title)}</h1>
{body}
</main></body></html>
"""
    return page.encode()
