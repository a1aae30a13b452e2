"""Pure: read and rewrite the model name of a request (aliasing ``fraud`` → ``fraud-v2``).

The model is where :func:`meshward.ai.protocol.classify` finds it: the OIP / TF Serving path
(``/v2/models/fraud/infer``) or the ``model`` field of an OpenAI-style JSON body. Rewriting
changes exactly that: the path segment, or the body's ``model`` field (the body is re-encoded
as JSON; its new length is the caller's to frame).
"""

from __future__ import annotations

import json
import re

__all__ = ["rewrite_body_model", "rewrite_path_model"]

_PATH_MODEL = re.compile(r"^(/v2/models/|/v1/models/)([^/:]+)")


def rewrite_path_model(path: str, model: str, alias: str) -> str | None:
    """``path`` with its model segment ``model`` replaced by ``alias``; None if it has none."""
    m = _PATH_MODEL.match(path)
    if m is None or m.group(2) != model:
        return None
    return m.group(1) + alias + path[m.end() :]


def rewrite_body_model(body: bytes, alias: str) -> bytes | None:
    """The JSON body with its ``model`` field set to ``alias``; None if it has no such field."""
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError, UnicodeDecodeError):
        return None
    if not isinstance(doc, dict) or not isinstance(doc.get("model"), str):
        return None
    doc["model"] = alias
    return json.dumps(doc, separators=(",", ":")).encode()
