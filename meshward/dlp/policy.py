"""Compile ``DataProtectionPolicy`` resources into what one sidecar enforces per direction.

Pure: resources in, a :class:`DlpPlan` per direction out. Several policies combine:

- a finding is flagged by every policy that lists its detector and does not allow its value;
- the strictest action among them wins (``block`` > ``redact`` > ``hash`` > ``mask`` > ``log``),
  ties go to the first policy by ``namespace/name``;
- ``failMode`` is ``closed`` if any policy says so; ``maxBodyBytes`` and export limits take the
  smallest value, reported with the policy that set it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Literal

from meshward.dlp.detectors import CandidatePattern, builtin_patterns, regex_pattern, terms_pattern
from meshward.dlp.scanner import Engine, Finding, Scanner

if TYPE_CHECKING:  # the DLP engine sits below the resource kinds (their validation uses it)
    from meshward.resources.dataprotection import DataProtectionPolicy

__all__ = [
    "ACTION_STRICTNESS",
    "Decision",
    "Direction",
    "DlpPlan",
    "DlpRule",
    "Limit",
    "compile_plans",
    "normalize_value",
]

Direction = Literal["request", "response"]
#: Which action wins when several rules find the same value (the strictest).
ACTION_STRICTNESS: dict[str, int] = {"log": 0, "mask": 1, "hash": 2, "redact": 3, "block": 4}
_SEPARATORS = re.compile(rb"[\s().-]+")


def normalize_value(value: bytes) -> bytes:
    """The form allow-list entries and hashes compare: lower case, no spaces/dashes/dots/parens."""
    return _SEPARATORS.sub(b"", value).lower()


@dataclass(frozen=True, slots=True)
class DlpRule:
    """One policy, compiled."""

    policy: str  # "namespace/name"
    detectors: frozenset[str]
    action: str
    allow: frozenset[bytes]  # normalized values


@dataclass(frozen=True, slots=True)
class Decision:
    action: str
    policy: str


@dataclass(frozen=True, slots=True)
class Limit:
    value: int
    policy: str


@dataclass
class DlpPlan:
    """Everything one direction enforces: a scanner over the union of detectors, and the rules."""

    direction: Direction
    rules: tuple[DlpRule, ...]
    scanner: Scanner
    fail_closed: bool
    fail_policy: str  # the policy whose failMode (or the first) decides, for the 403 body
    max_body_bytes: Limit
    max_response_bytes: Limit | None = None
    max_records: Limit | None = None

    @property
    def scans(self) -> bool:
        return bool(self.scanner.patterns)

    def decide(self, finding: Finding, value: bytes) -> Decision | None:
        """The action for one finding, or None when no policy flags it (allowed value)."""
        rules = self.rules
        if len(rules) == 1:
            rule = rules[0]
            if finding.detector in rule.detectors and (
                not rule.allow or normalize_value(value) not in rule.allow
            ):
                return Decision(rule.action, rule.policy)
            return None
        best: Decision | None = None
        normalized = normalize_value(value)
        for rule in rules:
            if finding.detector not in rule.detectors or normalized in rule.allow:
                continue
            if best is None or ACTION_STRICTNESS[rule.action] > ACTION_STRICTNESS[best.action]:
                best = Decision(rule.action, rule.policy)
        return best


def _patterns_for(policies: Iterable[DataProtectionPolicy]) -> list[CandidatePattern]:
    builtin: set[str] = set()
    custom: list[CandidatePattern] = []
    seen: set[str] = set()
    for policy in policies:
        for name in policy.spec.detector_names():
            builtin.add(name)
        for d in policy.spec.custom_detectors():
            if d.name in seen:
                continue  # the same name in two policies: the first definition wins
            seen.add(d.name)
            custom.append(
                regex_pattern(d.name, d.regex)
                if d.regex is not None
                else terms_pattern(d.name, d.terms or [])
            )
    return builtin_patterns(frozenset(builtin)) + custom


@lru_cache(maxsize=16)
def _scanner(patterns: tuple[CandidatePattern, ...], engine: Engine) -> Scanner:
    """Compiling a Hyperscan database takes 0.1-0.5 s: a new generation (or the other direction)
    with the same detectors reuses it. Scanners hold no per-scan state between calls."""
    return Scanner(patterns, engine)


def _smallest(policies: list[DataProtectionPolicy], attr: str) -> Limit | None:
    best: Limit | None = None
    for p in policies:
        value = getattr(p.spec.limits, attr)
        if value is not None and (best is None or value < best.value):
            best = Limit(value, f"{p.metadata.namespace}/{p.metadata.name}")
    return best


def compile_plans(
    policies: Iterable[DataProtectionPolicy], engine: Engine = "auto"
) -> dict[Direction, DlpPlan]:
    """One plan per direction that at least one policy covers."""
    ordered = sorted(policies, key=lambda p: (p.metadata.namespace, p.metadata.name))
    plans: dict[Direction, DlpPlan] = {}
    for direction in ("request", "response"):
        mine = [p for p in ordered if p.spec.direction in (direction, "both")]
        if not mine:
            continue
        rules = tuple(
            DlpRule(
                policy=f"{p.metadata.namespace}/{p.metadata.name}",
                detectors=frozenset(p.spec.detector_names()),
                action=p.spec.action,
                allow=frozenset(normalize_value(a.encode()) for a in p.spec.allow),
            )
            for p in mine
        )
        closed = [p for p in mine if p.spec.fail_mode == "closed"]
        deciding = (closed or mine)[0]
        size = min(mine, key=lambda p: p.spec.max_body_bytes)
        plans[direction] = DlpPlan(
            direction=direction,
            rules=rules,
            scanner=_scanner(tuple(_patterns_for(mine)), engine),
            fail_closed=bool(closed),
            fail_policy=f"{deciding.metadata.namespace}/{deciding.metadata.name}",
            max_body_bytes=Limit(size.spec.max_body_bytes, f"{size.metadata.namespace}/{size.metadata.name}"),
            max_response_bytes=_smallest(mine, "max_response_bytes") if direction == "response" else None,
            max_records=_smallest(mine, "max_records") if direction == "response" else None,
        )
    return plans
