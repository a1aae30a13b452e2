"""Compliance mapping: the controls in force per model service, mapped to frameworks (pure).

Frameworks: OWASP Top 10 for LLM Applications 2025 (the items a mesh can act on), the EU AI
Act Art. 12 (record-keeping) and Art. 15 (accuracy, robustness and cybersecurity), and the
NIST AI RMF functions (Govern, Map, Measure, Manage). Each entry says whether the service
has the control (``covered``), part of it (``partial``) or not (``missing``), and by which
resources. This is an aid for an assessment, not a certification.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

__all__ = ["CONTROLS", "Controls", "map_controls"]


@dataclass(frozen=True, slots=True)
class Controls:
    """What is in force for one service (resource names per control)."""

    mtls_strict: bool
    authorization: tuple[str, ...]  # enforced ALLOW/DENY policies naming callers
    allows_any_caller: bool
    data_protection: tuple[str, ...]
    rate_limits: tuple[str, ...]
    audited: bool  # the audit trail receives this service's decisions
    audit_signed: bool  # signed checkpoints exist
    reviewed: bool  # this report: an access review over observed traffic


# (framework, id, title, needs): needs names the Controls that cover it, all of them.
CONTROLS: Final = (
    ("OWASP LLM Top 10 2025", "LLM02", "Sensitive Information Disclosure", ("data_protection",)),
    ("OWASP LLM Top 10 2025", "LLM06", "Excessive Agency", ("authorization",)),
    ("OWASP LLM Top 10 2025", "LLM07", "System Prompt Leakage", ("data_protection",)),
    ("OWASP LLM Top 10 2025", "LLM10", "Unbounded Consumption", ("rate_limits", "authorization")),
    ("EU AI Act", "Art. 12", "Record-keeping (automatic logging of events)", ("audited", "audit_signed")),
    (
        "EU AI Act",
        "Art. 15",
        "Accuracy, robustness and cybersecurity",
        ("mtls_strict", "authorization", "rate_limits"),
    ),
    ("NIST AI RMF", "GOVERN", "Policies and accountability in place", ("authorization", "reviewed")),
    ("NIST AI RMF", "MAP", "Context and inventory of AI systems", ("reviewed",)),
    ("NIST AI RMF", "MEASURE", "Monitoring and measurement", ("audited",)),
    ("NIST AI RMF", "MANAGE", "Risk treatment enforced", ("authorization", "data_protection", "rate_limits")),
)


def _evidence(controls: Controls, need: str) -> tuple[bool, list[str]]:
    if need == "mtls_strict":
        return controls.mtls_strict, ["Mesh spec.mtls.mode STRICT"] if controls.mtls_strict else []
    if need == "authorization":
        ok = bool(controls.authorization) and not controls.allows_any_caller
        return ok, [f"AuthorizationPolicy {n}" for n in controls.authorization]
    if need == "data_protection":
        return bool(controls.data_protection), [f"DataProtectionPolicy {n}" for n in controls.data_protection]
    if need == "rate_limits":
        return bool(controls.rate_limits), [f"RateLimitPolicy {n}" for n in controls.rate_limits]
    if need == "audited":
        return controls.audited, ["audit trail (OCSF, hash-chained)"] if controls.audited else []
    if need == "audit_signed":
        return controls.audit_signed, ["signed audit checkpoints"] if controls.audit_signed else []
    return controls.reviewed, ["meshward review / discover"] if controls.reviewed else []


def map_controls(controls: Controls) -> list[dict[str, Any]]:
    out = []
    for framework, ident, title, needs in CONTROLS:
        results = [_evidence(controls, need) for need in needs]
        met = sum(1 for ok, _ in results if ok)
        status = "covered" if met == len(needs) else "partial" if met else "missing"
        by = sorted({item for ok, items in results if ok for item in items})
        gaps = sorted(need for need, (ok, _) in zip(needs, results, strict=True) if not ok)
        out.append(
            {"framework": framework, "id": ident, "title": title, "status": status, "by": by, "missing": gaps}
        )
    return out
