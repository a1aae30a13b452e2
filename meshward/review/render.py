"""Reports as text tables, Markdown and self-contained HTML (pure: a document in, text out).

A report document (``discover`` or ``review``) is first laid out as :class:`Section` s — a
title and a table — by :func:`sections`; each format then renders those the same way. HTML
has its style inline and no external resource (no script, font, image or link), and every
value is escaped with :func:`html.escape`; Markdown escapes the characters that would break
a table cell.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["Section", "render", "sections"]


@dataclass(frozen=True)
class Section:
    title: str
    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list | tuple):
        return ", ".join(_cell(v) for v in value) or "-"
    return str(value)


def _section(
    title: str, columns: Sequence[str], items: Sequence[dict[str, Any]], keys: Sequence[str]
) -> Section:
    rows = tuple(tuple(_cell(item.get(k)) for k in keys) for item in items)
    return Section(title, tuple(columns), rows)


def _findings(doc: dict[str, Any]) -> Section:
    return _section(
        "Findings",
        ("severity", "subject", "finding", "closed by"),
        doc.get("findings", []),
        ("severity", "subject", "message", "resource"),
    )


def _discovery(doc: dict[str, Any]) -> list[Section]:
    services = []
    callers = []
    for s in doc["services"]:
        e = s["exposure"]
        services.append(
            {
                "service": f"{s['service']}.{s['namespace']}",
                "identity": s["identity"],
                "models": s["models"],
                "operations": s["operations"],
                "mtls": e["mtls"],
                "plaintext": e["plaintextRequests"],
                "policies": e["authorizationPolicies"],
                "defaultDeny": e["defaultDeny"],
                "dlp": e["dataProtection"],
                "limits": e["rateLimits"],
                "findings": len(s["findings"]),
            }
        )
        callers += [{"service": f"{s['service']}.{s['namespace']}", **c} for c in s["callers"]]
    keys = (
        "service",
        "identity",
        "models",
        "operations",
        "mtls",
        "plaintext",
        "policies",
        "defaultDeny",
        "dlp",
        "limits",
        "findings",
    )
    return [
        _section("Services", keys, services, keys),
        _section(
            "Callers",
            ("service", "caller", "requests", "allowed", "denied", "last seen"),
            callers,
            ("service", "identity", "requests", "allowed", "denied", "lastSeen"),
        ),
        _findings(doc),
    ]


def _review(doc: dict[str, Any]) -> list[Section]:
    out = [
        _findings(doc),
        _section(
            "Rule use",
            ("policy", "rule", "action", "dry run", "matches", "callers", "last used"),
            doc["rules"],
            ("policy", "rule", "action", "dryRun", "matches", "callers", "lastUsed"),
        ),
        _section(
            "Unused grants", ("policy", "rule", "note"), doc["unusedGrants"], ("policy", "rule", "message")
        ),
        _section(
            "Broad rules",
            ("policy", "rule", "field", "allows", "seen"),
            doc["broadRules"],
            ("policy", "rule", "field", "allows", "seen"),
        ),
        _section(
            "Shadowed policies",
            ("policy", "rule", "action", "shadowed by", "note"),
            doc["shadowedPolicies"],
            ("policy", "rule", "action", "shadowedBy", "message"),
        ),
        _section("DENY rules that never fire", ("policy", "rule"), doc["unusedDenies"], ("policy", "rule")),
        _section(
            "Identities",
            ("identity", "certificates", "last issued", "made", "served", "last seen"),
            doc["identities"],
            ("identity", "certificates", "lastIssued", "requestsMade", "requestsServed", "lastSeen"),
        ),
        _section(
            "Stale identities",
            ("identity", "certificates", "last issued"),
            doc["staleIdentities"],
            ("identity", "certificates", "lastIssued"),
        ),
        _section(
            "Denials",
            ("identity", "service", "method", "path", "reason", "requests", "last seen"),
            doc["denials"],
            ("identity", "service", "method", "path", "reason", "requests", "lastSeen"),
        ),
        _section(
            "Dry-run policies that would deny",
            ("policy", "rule", "requests", "callers"),
            doc["dryRunDenials"],
            ("policy", "rule", "requests", "callers"),
        ),
        _section(
            "Least-privilege suggestions",
            ("service", "replaces", "observed allowed", "still allowed", "would deny"),
            [{**s, "wouldDeny": sum(d["requests"] for d in s["wouldDeny"])} for s in doc["suggestions"]],
            ("service", "replaces", "observedAllowed", "stillAllowed", "wouldDeny"),
        ),
        _section(
            "DLP findings",
            ("service", "detector", "count"),
            doc["dlpFindings"],
            ("service", "detector", "count"),
        ),
        _section(
            "Alerts",
            ("time", "severity", "subject", "message"),
            doc["alerts"],
            ("time", "severity", "subject", "message"),
        ),
        _section(
            "Certificate and CA expiry",
            ("subject", "not after", "days left", "severity"),
            doc["expiry"],
            ("subject", "notAfter", "daysLeft", "severity"),
        ),
    ]
    compliance = [
        {"service": c["service"], "models": c["models"], **control}
        for c in doc["compliance"]
        for control in c["controls"]
    ]
    out.append(
        _section(
            "Compliance mapping",
            ("service", "models", "framework", "control", "title", "status", "by", "missing"),
            compliance,
            ("service", "models", "framework", "id", "title", "status", "by", "missing"),
        )
    )
    return out


def sections(doc: dict[str, Any]) -> list[Section]:
    return _discovery(doc) if doc.get("kind") == "Discovery" else _review(doc)


def _title(doc: dict[str, Any]) -> str:
    what = "Mesh discovery" if doc.get("kind") == "Discovery" else "Access review"
    w = doc.get("window") or {}
    return f"{what}: {doc.get('trustDomain', '')} ({w.get('since', '?')} to {w.get('until', '?')})"


def _table(doc: dict[str, Any]) -> str:
    lines = [_title(doc), ""]
    for s in sections(doc):
        lines.append(f"== {s.title} ({len(s.rows)})")
        if not s.rows:
            lines += ["  (none)", ""]
            continue
        widths = [max(len(c), *(len(r[i]) for r in s.rows)) for i, c in enumerate(s.columns)]
        lines.append("  ".join(c.upper().ljust(w) for c, w in zip(s.columns, widths, strict=True)).rstrip())
        lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in s.rows]
        lines.append("")
    return "\n".join(lines)


def _md_cell(text: str) -> str:
    return (
        text.replace("\\", "\\\\")
        .replace("|", "\\|")
        .replace("\n", " ")
        .replace("<", "&lt;")
        .replace(">", "&gt;")
    )


def _markdown(doc: dict[str, Any]) -> str:
    lines = [f"# {_md_cell(_title(doc))}", ""]
    for s in sections(doc):
        lines += [f"## {s.title}", ""]
        if not s.rows:
            lines += ["_none_", ""]
            continue
        lines.append("| " + " | ".join(s.columns) + " |")
        lines.append("|" + "---|" * len(s.columns))
        lines += ["| " + " | ".join(_md_cell(v) for v in r) + " |" for r in s.rows]
        lines.append("")
    return "\n".join(lines)


_STYLE = (
    "body{font-family:sans-serif;margin:2em;color:#222}"
    "table{border-collapse:collapse;margin-bottom:1.5em}"
    "th,td{border:1px solid #bbb;padding:3px 8px;text-align:left;vertical-align:top}"
    "th{background:#eee}.sev-critical,.sev-high{color:#b00;font-weight:bold}.sev-medium{color:#a60}"
)


def _html(doc: dict[str, Any]) -> str:
    e = html.escape
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{e(_title(doc))}</title>",
        f"<style>{_STYLE}</style></head><body>",
        f"<h1>{e(_title(doc))}</h1>",
    ]
    for s in sections(doc):
        slug = "".join(c if c.isalnum() else "-" for c in s.title.lower())
        out.append(f'<section id="{slug}"><h2>{e(s.title)}</h2>')
        if not s.rows:
            out.append("<p>none</p></section>")
            continue
        out.append(
            "<table><thead><tr>" + "".join(f"<th>{e(c)}</th>" for c in s.columns) + "</tr></thead><tbody>"
        )
        for r in s.rows:
            cells = []
            for column, value in zip(s.columns, r, strict=True):
                cls = f' class="sev-{e(value)}"' if column == "severity" else ""
                cells.append(f"<td{cls}>{e(value)}</td>")
            out.append("<tr>" + "".join(cells) + "</tr>")
        out.append("</tbody></table></section>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def render(doc: dict[str, Any], fmt: str) -> str:
    """``table``, ``md`` or ``html``."""
    if fmt == "md":
        return _markdown(doc) + "\n"
    if fmt == "html":
        return _html(doc)
    return _table(doc) + "\n"
