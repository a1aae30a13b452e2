"""What an analysis rule reports: a :class:`Finding`, and the exit code a set of them means."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["CLEAN", "ERRORS", "WARNINGS", "Finding", "exit_code"]

CLEAN, WARNINGS, ERRORS = 0, 1, 2

Level = Literal["error", "warning"]


@dataclass(frozen=True, slots=True)
class Finding:
    """One problem: its level, a stable code (``MW0xx``), the resource, what is wrong, the fix."""

    level: Level
    code: str
    resource: str  # "Kind ns/name"
    message: str
    fix: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "level": self.level,
            "code": self.code,
            "resource": self.resource,
            "message": self.message,
            "fix": self.fix,
        }

    def __str__(self) -> str:
        fix = f" (fix: {self.fix})" if self.fix else ""
        return f"{self.level} [{self.code}] {self.resource}: {self.message}{fix}"


def exit_code(findings: Iterable[Finding]) -> int:
    """0 clean, 1 warnings only, 2 any error."""
    levels = {f.level for f in findings}
    return ERRORS if "error" in levels else WARNINGS if levels else CLEAN
