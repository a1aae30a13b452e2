"""Path patterns: Istio's string forms (:mod:`meshward.patterns.strings`) or a URI template.

A template starts with ``/`` and uses ``{*}`` for exactly one path segment and ``{**}`` for
anything that follows (only as the last operator); every other character is literal.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Final

from meshward.patterns.strings import check_string_pattern

__all__ = ["check_path_pattern", "is_template", "template_regex"]

_TEMPLATE_OPERATOR: Final = re.compile(r"\{\*\*\}|\{\*\}")


def is_template(pattern: str) -> bool:
    """A URI template (else one of the string forms)."""
    return "{" in pattern


def check_path_pattern(value: str) -> None:
    """Paths: the string forms, or a URI template with ``{*}`` / ``{**}``."""
    if "{" not in value and "}" not in value:
        check_string_pattern(value)
        return
    if not value.startswith("/"):
        raise ValueError(f"path template {value!r} must start with '/'")
    literals = _TEMPLATE_OPERATOR.split(value)
    if any(c in part for part in literals for c in "{}*"):
        raise ValueError(f"path template {value!r}: only the operators {{*}} and {{**}} are supported")
    operators = _TEMPLATE_OPERATOR.findall(value)
    if "{**}" in operators[:-1]:
        raise ValueError(f"path template {value!r}: {{**}} must be the last operator")


def template_regex(templates: Iterable[str]) -> re.Pattern[str]:
    """One anchored-by-``fullmatch`` regex for URI templates (``{*}`` / ``{**}``)."""
    return re.compile("|".join(f"(?:{_template_regex(t)})" for t in templates))


def _template_regex(template: str) -> str:
    parts: list[str] = []
    pos = 0
    for m in _TEMPLATE_OPERATOR.finditer(template):
        parts.append(re.escape(template[pos : m.start()]))
        parts.append("[^/]+" if m.group(0) == "{*}" else ".*")
        pos = m.end()
    parts.append(re.escape(template[pos:]))
    return "".join(parts)
