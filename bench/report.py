"""Render benchmark results (the dicts the ``bench/<area>.py`` modules return) as Markdown.

Pure: data in, text out. The runner (:mod:`bench.__main__`) does the I/O.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["AreaRun", "Machine", "flatten", "met_flags", "render", "targets"]

_MET_KEY = re.compile(r"(^|[._])(met|meets(_[a-z0-9_]+)?|[a-z0-9_]*_met|[a-z0-9_]*_ok|ok)$")


@dataclass
class AreaRun:
    """One area's last run: its status and the dict its ``run()`` returned."""

    name: str
    status: str  # ok | failed | missing | timeout | skipped
    command: str
    started: str = ""
    seconds: float = 0.0
    result: dict[str, Any] = field(default_factory=dict)
    error: str = ""
    load: float | None = None  # 1-minute load average when the area started (a shared machine)


@dataclass
class Machine:
    cpus: int
    cpu_model: str
    memory: str
    kernel: str
    python: str
    tools: dict[str, str] = field(default_factory=dict)
    load: str = ""  # load average when the run started (the machine may be shared)


def flatten(value: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """``{"a": {"b": 1}, "c": [1, 2]}`` → ``("a.b", 1), ("c", [1, 2])``; lists of dicts are indexed."""
    if isinstance(value, Mapping):
        for key, inner in value.items():
            yield from flatten(inner, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(value, list) and value and all(isinstance(v, Mapping) for v in value):
        for i, inner in enumerate(value):
            label = inner.get("name", i) if isinstance(inner, Mapping) else i
            yield from flatten(inner, f"{prefix}[{label}]")
    else:
        yield prefix, value


def met_flags(result: Mapping[str, Any]) -> list[tuple[str, bool]]:
    """Every boolean that says whether a target was met, with its key."""
    return [(k, v) for k, v in flatten(result) if isinstance(v, bool) and _MET_KEY.search(k)]


def _fmt(value: Any) -> str:
    if value is None or value == "":
        return "—"
    if isinstance(value, bool):
        return "**met**" if value else "**not met**"
    if isinstance(value, float):
        return f"{value:,.4g}" if abs(value) < 1e4 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    text = str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    out = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    out += ["| " + " | ".join(row) + " |" for row in rows]
    return out


def _summary_cell(run: AreaRun) -> str:
    flags = met_flags(run.result)
    # An area that lists its targets as rows (``results[...]`` with ``met``) may also repeat
    # them as top-level flags: count each target once, from its row, and only rows that name a
    # target (an informational row is not a target met).
    rows = run.result.get("results")
    if isinstance(rows, list) and any(
        isinstance(r, Mapping) and isinstance(r.get("met"), bool) for r in rows
    ):
        flags = [
            (str(r.get("name")), bool(r["met"]))
            for r in rows
            if isinstance(r, Mapping)
            and isinstance(r.get("met"), bool)
            and r.get("target") not in (None, "", "-")
        ]
    if not flags:
        return "—"
    met = sum(1 for _, ok in flags if ok)
    return f"{met} of {len(flags)} met"


def _area_section(run: AreaRun) -> list[str]:
    lines = [f"## {run.name}", ""]
    lines.append(
        f"Command: `{run.command}`"
        + (f" · run {run.started}, {run.seconds:.0f} s" if run.started else "")
        + (f", load average {run.load:.1f} at its start" if run.load is not None else "")
    )
    lines.append("")
    if run.status != "ok":
        lines += [f"**{run.status}**: {_fmt(run.error or 'no result')}", ""]
        if not run.result:
            return lines
    rows = run.result.get("results")
    rest = {k: v for k, v in run.result.items() if k not in ("results", "notes", "command", "tables")}
    if isinstance(rows, list) and rows and all(isinstance(r, Mapping) for r in rows):
        table = [
            [
                _fmt(r.get("name", "")),
                _fmt(r.get("value", "")),
                _fmt(r.get("unit", "")),
                _fmt(r.get("target", "")),
                _fmt(r["met"]) if isinstance(r.get("met"), bool) else "—",
            ]
            for r in rows
        ]
        lines += [*_table(["measure", "value", "unit", "target", "met"], table), ""]
    if rest:
        detail = _table(["result", "value"], [[f"`{k}`", _fmt(v)] for k, v in flatten(rest)])
        if isinstance(rows, list) and rows:  # the rows above are the headline; the rest folds away
            lines += [
                "<details><summary>every number of this run</summary>",
                "",
                *detail,
                "",
                "</details>",
                "",
            ]
        else:
            lines += [*detail, ""]
    lines += _extra_tables(run.result.get("tables"))
    ratios = [(k, v) for k, v in flatten(rest) if "ratio" in k.lower()]
    if ratios:
        lines += ["Ratios: " + "; ".join(f"`{k}` = {_fmt(v)}" for k, v in ratios), ""]
    if run.result.get("notes"):
        lines += [str(run.result["notes"]), ""]
    return lines


def _extra_tables(tables: Any) -> list[str]:
    """An area's ``tables``: ``{title: [row dict, ...]}``, each shown as a table of its own (the
    columns are the first row's keys), e.g. a profile by phase."""
    if not isinstance(tables, Mapping):
        return []
    lines: list[str] = []
    for title, rows in tables.items():
        if not isinstance(rows, list) or not rows or not all(isinstance(r, Mapping) for r in rows):
            continue
        headers = list(rows[0])
        lines += [f"**{_fmt(title)}**", ""]
        lines += [*_table([_fmt(h) for h in headers], [[_fmt(r.get(h)) for h in headers] for r in rows]), ""]
    return lines


def targets(runs: Sequence[AreaRun]) -> list[list[str]]:
    """One row per target any area reported: area, measure, value, target, met."""
    out: list[list[str]] = []
    for run in runs:
        rows = run.result.get("results")
        listed = False
        if isinstance(rows, list):
            for r in rows:
                if isinstance(r, Mapping) and isinstance(r.get("met"), bool):
                    listed = True
                    if r.get("target") in (None, "", "-"):
                        continue  # informational: measured, but no target to meet
                    unit = f" {r['unit']}" if r.get("unit") and r.get("unit") != "x" else ""
                    value = f"{_fmt(r.get('value'))}{unit}"
                    out.append([run.name, _fmt(r.get("name")), value, _fmt(r.get("target")), _fmt(r["met"])])
        if not listed:
            for key, ok in met_flags(run.result):
                out.append([run.name, f"`{key}`", "—", "see the section", _fmt(ok)])
    return out


def render(machine: Machine, runs: Sequence[AreaRun], generated: str, runner_command: str) -> str:
    """The whole ``BENCHMARKS.md``."""
    lines = [
        "# Meshward benchmarks",
        "",
        f"Generated {generated} by `{runner_command}` (the runner: `bench/__main__.py`). Each area's",
        "section says when it last ran and the exact command that reproduces it alone. Numbers come",
        "from one shared 2-core machine: compare the ratios (measured side by side in one run) more",
        "than the absolute values.",
        "",
        "## Machine",
        "",
        *_table(
            ["", ""],
            [
                ["CPUs (nproc)", str(machine.cpus)],
                ["CPU model", _fmt(machine.cpu_model)],
                ["Memory", machine.memory],
                ["Kernel", machine.kernel],
                ["Python", machine.python],
                *([["Load average at start (1/5/15 min)", machine.load]] if machine.load else []),
                *[[name, _fmt(version)] for name, version in sorted(machine.tools.items())],
            ],
        ),
        "",
        "## Summary",
        "",
        *_table(
            ["area", "status", "targets", "time", "command"],
            [
                [
                    r.name,
                    r.status,
                    _summary_cell(r),
                    f"{r.seconds:.0f} s" if r.started else "—",
                    f"`{r.command}`",
                ]
                for r in runs
            ],
        ),
        "",
    ]
    rows = targets(runs)
    if rows:
        lines += ["## Targets", "", *_table(["area", "measure", "value", "target", "met"], rows), ""]
    for run in runs:
        lines += _area_section(run)
    return "\n".join(lines).rstrip() + "\n"
