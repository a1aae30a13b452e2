"""Adapter to the AI protocol classifier (``meshward.ai.protocol``), owned by the sidecar.

The sidecar calls :func:`classify` on every inbound request head and again with the body when
a filter buffered it. If the classifier module is absent, requests keep the default
:class:`~meshward.ai.types.AIRequest` (protocol ``http``, operation ``other``); an error
*inside* the classifier is not hidden (only a missing module is tolerated).
"""

from __future__ import annotations

from collections.abc import Callable

from meshward.ai.types import AIRequest

__all__ = ["AVAILABLE", "classify"]

_Classifier = Callable[[str, str, dict[str, str], bytes | None], AIRequest]
_impl: _Classifier | None
try:
    from meshward.ai.protocol import classify as _impl
except ModuleNotFoundError as exc:  # pragma: no cover - only before the classifier exists
    if exc.name != "meshward.ai.protocol":
        raise
    _impl = None

AVAILABLE = _impl is not None


def classify(method: str, path: str, headers: dict[str, str], body: bytes | None) -> AIRequest:
    """Protocol, operation, model and streaming of a request (defaults when unknown)."""
    if _impl is None:
        return AIRequest()
    return _impl(method, path, headers, body)
