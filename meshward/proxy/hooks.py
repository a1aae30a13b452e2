"""A filter chain compiled for the hot path: per hook, only the filters that implement it.

Built once per config generation (and per external host for egress), so that a request pays
only for the hooks some filter overrides: a chain where no filter looks at response chunks
costs nothing per chunk.
"""

from __future__ import annotations

from collections.abc import Sequence

from meshward.filters.base import Filter

__all__ = ["CompiledChain"]


def _overrides(f: Filter, hook: str) -> bool:
    return getattr(type(f), hook) is not getattr(Filter, hook)


class CompiledChain:
    """The ordered filters plus, per hook, only the filters that implement it."""

    __slots__ = ("body", "chunk", "complete", "eager", "filters", "headers", "requests")

    def __init__(self, filters: Sequence[Filter]) -> None:
        self.filters = tuple(filters)
        self.body = tuple(f for f in filters if _overrides(f, "wants_request_body"))
        self.requests = tuple(f for f in filters if _overrides(f, "on_request"))
        rev = tuple(reversed(self.filters))
        self.headers = tuple(f for f in rev if _overrides(f, "on_response_headers"))
        self.chunk = tuple(
            f for f in rev if _overrides(f, "on_response_chunk") or _overrides(f, "on_response_end")
        )
        self.complete = tuple(f for f in rev if _overrides(f, "on_complete"))
        # Requests may run inline (no Task per request) when no filter needs one up front.
        self.eager = all(f.eager_safe for f in self.requests)

    def __len__(self) -> int:
        return len(self.filters)
