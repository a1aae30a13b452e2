"""Istio's string match forms, as ``AuthorizationPolicy`` defines them: the one implementation.

- exact ``abc`` matches ``abc`` only;
- prefix ``abc*`` matches ``abc`` and ``abcd``;
- suffix ``*abc`` matches ``abc`` and ``xabc``;
- presence ``*`` matches any non-empty value.

A missing value (None) matches nothing. A policy's list of patterns matches when any of them
does. :func:`check_string_pattern` is the load-time validation (no other ``*`` than one leading
or one trailing); :class:`StringMatcher` is the compiled form: a frozenset of exact values and
tuples of prefixes and suffixes, so a match is a set lookup and two ``str`` method calls. The
authorization compiler emits code from a matcher's parts; rate limits call :meth:`matches`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

__all__ = ["PatternKind", "StringMatcher", "check_string_pattern", "is_exact", "pattern_kind"]

PatternKind = Literal["exact", "prefix", "suffix", "presence"]


def check_string_pattern(value: str) -> None:
    """Refuse empty values and wildcards other than a leading or trailing ``*``."""
    if not value:
        raise ValueError("empty value (use '*' to match any value)")
    inner = value[1:-1] if len(value) > 1 else ""
    if "*" in inner or value == "**":
        raise ValueError(f"{value!r}: '*' is only allowed at the start or the end of a value")
    if len(value) > 1 and value.startswith("*") and value.endswith("*"):
        raise ValueError(f"{value!r}: use either a prefix ('abc*') or a suffix ('*abc') match, not both")


def pattern_kind(pattern: str) -> tuple[PatternKind, str]:
    """Which form ``pattern`` is, and the text it compares (without the ``*``). Istio's order:
    presence, then suffix (a leading ``*``), then prefix (a trailing ``*``), else exact."""
    if pattern == "*":
        return "presence", ""
    if pattern.startswith("*"):
        return "suffix", pattern[1:]
    if pattern.endswith("*"):
        return "prefix", pattern[:-1]
    return "exact", pattern


def is_exact(pattern: str) -> bool:
    """Does ``pattern`` match one value only (no ``*`` form)?"""
    return pattern_kind(pattern)[0] == "exact"


class StringMatcher:
    """A list of patterns compiled once: matches when any pattern matches."""

    __slots__ = ("exact", "prefixes", "presence", "suffixes")

    def __init__(self, patterns: Iterable[str]) -> None:
        exact: set[str] = set()
        prefixes: list[str] = []
        suffixes: list[str] = []
        self.presence = False
        for pattern in patterns:
            kind, text = pattern_kind(pattern)
            if kind == "presence":
                self.presence = True
            elif kind == "suffix":
                suffixes.append(text)
            elif kind == "prefix":
                prefixes.append(text)
            else:
                exact.add(text)
        self.exact = frozenset(exact)
        self.prefixes = tuple(prefixes)
        self.suffixes = tuple(suffixes)

    @property
    def exact_only(self) -> bool:
        """Only exact values: a match is one set lookup."""
        return not (self.presence or self.prefixes or self.suffixes)

    def matches(self, value: str | None) -> bool:
        if value is None:
            return False
        if self.presence and value:
            return True
        if value in self.exact:
            return True
        return (bool(self.prefixes) and value.startswith(self.prefixes)) or (
            bool(self.suffixes) and value.endswith(self.suffixes)
        )

    def __repr__(self) -> str:
        return (
            f"StringMatcher(exact={sorted(self.exact)}, prefixes={list(self.prefixes)}, "
            f"suffixes={list(self.suffixes)}, presence={self.presence})"
        )
