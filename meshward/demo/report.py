"""One step's outcome and the table of all of them (pure: data in, text out)."""

from __future__ import annotations

import enum
import shutil
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["Outcome", "StepResult", "render_table", "summary_line"]


class Outcome(enum.Enum):
    PASS = "PASS"
    FAIL = "FAIL"
    SKIP = "SKIP"


_COLORS = {Outcome.PASS: "\x1b[32m", Outcome.FAIL: "\x1b[31m", Outcome.SKIP: "\x1b[33m"}
_RESET = "\x1b[0m"


@dataclass(frozen=True)
class StepResult:
    title: str
    expected: str
    observed: str
    outcome: Outcome

    @property
    def label(self) -> str:
        return "SKIP (not built)" if self.outcome is Outcome.SKIP else self.outcome.value


def _wrap(text: str, width: int) -> list[str]:
    return textwrap.wrap(text, width) or [""]


def render_table(results: Sequence[StepResult], color: bool, width: int | None = None) -> str:
    """A table: #, step, expected, observed, result; long cells wrap within their column."""
    total = width or shutil.get_terminal_size((120, 24)).columns
    total = max(total, 80)
    label_w = max([len("result"), *(len(r.label) for r in results)])
    num_w = len(str(len(results))) + 0
    free = total - (num_w + label_w + 16)
    step_w, exp_w = free * 3 // 10, free * 3 // 10
    obs_w = free - step_w - exp_w
    widths = (num_w, step_w, exp_w, obs_w, label_w)
    heads = ("#", "step", "expected", "observed", "result")

    def line(cells: Sequence[str], paint: str = "") -> str:
        parts = []
        for i, (cell, w) in enumerate(zip(cells, widths, strict=True)):
            text = cell.ljust(w)
            if paint and i == 4 and cell:
                text = paint + text + _RESET
            parts.append(text)
        return "| " + " | ".join(parts) + " |"

    rule = "+" + "+".join("-" * (w + 2) for w in widths) + "+"
    out = [rule, line(heads), rule]
    for n, r in enumerate(results, 1):
        columns = [
            [str(n)],
            _wrap(r.title, step_w),
            _wrap(r.expected, exp_w),
            _wrap(r.observed, obs_w),
            [r.label],
        ]
        height = max(len(c) for c in columns)
        paint = _COLORS[r.outcome] if color else ""
        for row in range(height):
            out.append(line([c[row] if row < len(c) else "" for c in columns], paint if row == 0 else ""))
    out.append(rule)
    return "\n".join(out)


def summary_line(results: Sequence[StepResult]) -> str:
    counts = {o: sum(1 for r in results if r.outcome is o) for o in Outcome}
    text = f"{counts[Outcome.PASS]} of {len(results)} steps held"
    if counts[Outcome.FAIL]:
        text += f"; {counts[Outcome.FAIL]} did not"
    if counts[Outcome.SKIP]:
        text += f"; {counts[Outcome.SKIP]} skipped (not built yet)"
    return text
