"""What a refused caller is told: status, headers and JSON body (pure).

Headers follow the IETF httpapi "RateLimit header fields for HTTP" draft (structured
fields): ``RateLimit-Policy: "<limit>";q=<quota>;w=<window>[;qu="<unit>"]`` and
``RateLimit: "<limit>";r=<remaining>;t=<seconds to reset>``, plus ``Retry-After`` in
seconds (RFC 9110) naming the same moment as ``t`` when a window resets. Token budgets say
``qu="tokens"``, concurrency bounds ``qu="concurrent-requests"``.

Admitted responses carry the same two fields for the enforced limit with the smallest share
left (the draft asks for the tightest window), so well-behaved clients can pace themselves.

A limit whose store is unreachable and fails closed answers 503 (the mesh's fault, not the
caller's) with ``Retry-After: 1`` and no RateLimit fields (nothing is known about them).
"""

from __future__ import annotations

from typing import Any

from meshward.ratelimit.compile import CompiledLimit, Dimension
from meshward.ratelimit.limiter import Refusal
from meshward.ratelimit.state import Decision, ceil_seconds

__all__ = ["RefusalAnswer", "answer_for", "status_headers"]


class RefusalAnswer:
    __slots__ = ("body", "headers", "message", "status")

    def __init__(
        self, status: int, message: str, headers: list[tuple[str, str]], body: dict[str, Any]
    ) -> None:
        self.status = status
        self.message = message
        self.headers = headers
        self.body = body


def answer_for(refusal: Refusal) -> RefusalAnswer:
    limit = refusal.limit
    decision = refusal.decision
    if refusal.unavailable:
        return RefusalAnswer(
            503,
            "rate limit store unavailable",
            [("Retry-After", "1")],
            {"limit": limit.name, "policy": limit.policy, "reason": "backend_unavailable"},
        )
    retry_after = max(1, ceil_seconds(decision.retry_after))
    headers = [
        ("Retry-After", str(retry_after)),
        ("RateLimit-Policy", limit.policy_item(refusal.dimension)),
        # t names the same moment as Retry-After, as the draft asks of a refusal carrying both.
        ("RateLimit", f'"{limit.name}";r={decision.remaining};t={retry_after}'),
    ]
    body: dict[str, Any] = {
        "limit": limit.name,
        "policy": limit.policy,
        "dimension": refusal.dimension,
        "remaining": decision.remaining,
        "retry_after": retry_after,
    }
    return RefusalAnswer(429, "rate limited", headers, body)


def status_headers(limit: CompiledLimit, dimension: Dimension, decision: Decision) -> list[tuple[str, str]]:
    """``RateLimit-Policy`` and ``RateLimit`` for an admitted request."""
    item = f'"{limit.name}";r={decision.remaining}'
    if dimension != "concurrency":
        item += f";t={ceil_seconds(decision.reset)}"
    return [("RateLimit-Policy", limit.policy_item(dimension)), ("RateLimit", item)]
