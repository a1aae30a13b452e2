"""A finding: a gap with a severity, what it concerns, and the resource that would close it."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final

__all__ = ["SEVERITIES", "Finding", "sort_findings"]

SEVERITIES: Final = ("critical", "high", "medium", "low", "info")
_RANK: Final = {name: i for i, name in enumerate(SEVERITIES)}


@dataclass(frozen=True, slots=True)
class Finding:
    severity: str
    subject: str  # a service (name.namespace), identity, policy rule or "mesh"
    message: str
    resource: str = ""  # what would close it ("AuthorizationPolicy selecting app=chat", ...)
    check: str = ""  # a stable id of the check (e.g. "mtls-permissive")

    def to_json(self) -> dict[str, Any]:
        return {
            "severity": self.severity,
            "subject": self.subject,
            "message": self.message,
            "resource": self.resource,
            "check": self.check,
        }


def sort_findings(findings: Iterable[Finding]) -> list[Finding]:
    """Most severe first, then by subject, check and message (a stable order)."""
    unique = set(findings)
    return sorted(unique, key=lambda f: (_RANK.get(f.severity, 99), f.subject, f.check, f.message))
