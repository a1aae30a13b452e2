"""Pure: does a mirrored (shadow) answer differ from the answer the caller got?

Two answers are the same when their status codes are equal and — for JSON bodies — their
documents are equal after dropping what legitimately differs between any two calls (ids,
timestamps, the model's own name, token usage, timings), with numbers compared to a relative
tolerance of 1e-3 (so float noise is not a difference, a drifted score is). Non-JSON bodies are
compared byte for byte. The result feeds the ``mirrorDiffRate`` rollout check.
"""

from __future__ import annotations

import json
import math
from typing import Any

__all__ = ["IGNORED_KEYS", "answers_differ", "documents_differ"]

IGNORED_KEYS = frozenset(
    {"id", "created", "model", "model_name", "model_version", "system_fingerprint", "usage", "request_id"}
)
_MAX_DEPTH = 32


def documents_differ(a: Any, b: Any, depth: int = 0) -> bool:
    if depth > _MAX_DEPTH:
        return bool(a != b)
    if isinstance(a, bool) or isinstance(b, bool):
        return a is not b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return not math.isclose(a, b, rel_tol=1e-3, abs_tol=1e-9)
    if isinstance(a, dict) and isinstance(b, dict):
        keys = (a.keys() | b.keys()) - IGNORED_KEYS
        return any(k not in a or k not in b or documents_differ(a[k], b[k], depth + 1) for k in keys)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) != len(b) or any(documents_differ(x, y, depth + 1) for x, y in zip(a, b, strict=True))
    return bool(a != b)


def answers_differ(status_a: int, body_a: bytes, status_b: int, body_b: bytes) -> bool:
    if status_a != status_b:
        return True
    if body_a == body_b:
        return False
    try:
        doc_a, doc_b = json.loads(body_a), json.loads(body_b)
    except (ValueError, RecursionError, UnicodeDecodeError):
        return True
    return documents_differ(doc_a, doc_b)
