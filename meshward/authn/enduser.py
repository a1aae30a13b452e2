"""The end user a request was authenticated as (a JWT's claims or an API key's principal)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["EndUser", "claim_value"]


@dataclass(frozen=True, slots=True)
class EndUser:
    """``principal`` is Istio's request principal: ``iss/sub`` for a JWT, the key's principal
    for an API key."""

    principal: str
    via: Literal["jwt", "apikey"]
    audiences: tuple[str, ...] = ()
    presenter: str | None = None
    claims: Mapping[str, Any] = field(default_factory=dict)


def claim_value(claims: Mapping[str, Any], path: tuple[str, ...]) -> list[str]:
    """Istio's ``request.auth.claims[a][b]``: the string values at a nested path (a list claim
    gives each of its strings; a missing or non-string claim gives none)."""
    node: Any = claims
    for step in path:
        if not isinstance(node, Mapping) or step not in node:
            return []
        node = node[step]
    if isinstance(node, str):
        return [node]
    if isinstance(node, bool):
        return ["true" if node else "false"]
    if isinstance(node, int | float):
        return [str(node)]
    if isinstance(node, list):
        return [v for v in node if isinstance(v, str)]
    return []
