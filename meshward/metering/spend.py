"""Pure: AI calls (from the audit trail) → usage and spend per identity or model.

A call is ``(time_ms, identity, model, input_tokens, output_tokens)``. Prices come from
``Mesh.spec.pricing`` (or ``meshward usage --prices FILE``): per model, cost per million input
and output tokens; a ``model: "*"`` entry prices every model not listed; an unpriced model
costs nothing (``cost`` None).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from meshward.resources.mesh import ModelPrice

__all__ = ["Call", "UsageRow", "call_of_event", "price_for", "summarize"]

By = Literal["identity", "model"]


@dataclass(frozen=True, slots=True)
class Call:
    time_ms: int
    identity: str
    model: str
    input: int
    output: int


@dataclass(slots=True)
class UsageRow:
    key: str
    requests: int = 0
    input: int = 0
    output: int = 0
    cost: float | None = None
    currency: str | None = None

    @property
    def total(self) -> int:
        return self.input + self.output

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "requests": self.requests,
            "input_tokens": self.input,
            "output_tokens": self.output,
            "total_tokens": self.total,
            "cost": None if self.cost is None else round(self.cost, 6),
            "currency": self.currency,
        }


def call_of_event(event: dict[str, Any]) -> Call | None:
    """The AI call an OCSF HTTP Activity audit event records, if it used tokens."""
    meshward = (event.get("unmapped") or {}).get("meshward") or {}
    tokens = meshward.get("tokens")
    if not isinstance(tokens, list) or len(tokens) < 2:
        return None
    identity = ((event.get("actor") or {}).get("user") or {}).get("uid") or "unauthenticated"
    return Call(
        int(event.get("time") or 0),
        str(identity),
        str(meshward.get("model") or "unknown"),
        int(tokens[0]),
        int(tokens[1]),
    )


def price_for(model: str, prices: Sequence[ModelPrice]) -> ModelPrice | None:
    exact = next((p for p in prices if p.model == model), None)
    return exact or next((p for p in prices if p.model == "*"), None)


def summarize(
    calls: Iterable[Call], by: By, prices: Sequence[ModelPrice], since_ms: int = 0
) -> list[UsageRow]:
    """Usage rows keyed by identity or model, most tokens first; costs where prices are known."""
    rows: dict[str, UsageRow] = {}
    for call in calls:
        if call.time_ms < since_ms:
            continue
        key = call.identity if by == "identity" else call.model
        row = rows.setdefault(key, UsageRow(key))
        row.requests += 1
        row.input += call.input
        row.output += call.output
        price = price_for(call.model, prices)
        if price is not None:
            cost = (call.input * price.input_per_million + call.output * price.output_per_million) / 1e6
            row.cost = (row.cost or 0.0) + cost
            row.currency = price.currency
    return sorted(rows.values(), key=lambda r: (-r.total, r.key))
