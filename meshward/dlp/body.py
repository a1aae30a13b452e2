"""Whole-body inspection: JSON-aware for JSON, as text for text, refused or passed for the rest.

- JSON (``application/json``, ``*+json``): only string values are scanned and rewritten, so the
  document stays valid JSON — an OpenAI ``messages[].content``, an OIP v2 ``BYTES`` tensor's
  ``data``, any nesting. Keys, numbers and booleans are not scanned (a card number sent as a
  JSON *number* is not seen; say so in your policy review). A rewritten document is
  re-serialized compactly (``ensure_ascii=False``).
- Text (``text/*``, form data, XML, no content type): scanned as bytes.
- Anything else (images, audio, octet streams, multipart) and anything compressed
  (``Content-Encoding`` other than identity) or larger than ``maxBodyBytes`` is
  *uninspectable*: :class:`Uninspectable` is raised and the caller applies ``failMode``.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any, Literal

from meshward.dlp.policy import DlpPlan
from meshward.dlp.redact import Outcome, Redactor, inspect_text

__all__ = [
    "BodyKind",
    "Uninspectable",
    "body_kind",
    "check_encoding",
    "count_records",
    "inspect_body",
    "inspect_json",
    "walk_strings",
]

BodyKind = Literal["json", "text", "sse", "binary"]
_TEXT_TYPES = frozenset(
    {
        "application/x-www-form-urlencoded",
        "application/xml",
        "application/javascript",
        "application/x-ndjson",
        "application/jsonl",
        "application/yaml",
        "application/graphql",
    }
)


class Uninspectable(Exception):
    """The body cannot be inspected (the reason names the cause, never the content)."""


def body_kind(content_type: str | None) -> BodyKind:
    """Classify a ``Content-Type`` header value."""
    if not content_type:
        return "text"
    media = content_type.split(";", 1)[0].strip().lower()
    if media == "application/json" or media.endswith("+json"):
        return "json"
    if media == "text/event-stream":
        return "sse"
    if media.startswith("text/") or media in _TEXT_TYPES:
        return "text"
    return "binary"


def check_encoding(content_encoding: str | None) -> None:
    if content_encoding and content_encoding.strip().lower() not in ("identity", ""):
        raise Uninspectable(f"content-encoding {content_encoding.strip().lower()!r} cannot be inspected")


def _walk(
    plan: DlpPlan, redactor: Redactor, node: Any, outcome: Outcome, edits: list[tuple[bytes, bytes]] | None
) -> tuple[Any, bool]:
    """Rewrite string values (containers in place); returns (node, whether anything changed).

    ``edits`` (when given) collects (old, new) UTF-8 pairs of the rewritten strings."""
    if isinstance(node, str):
        if len(node) < plan.scanner.min_length:
            return node, False
        raw = node.encode("utf-8", "surrogatepass")
        new = inspect_text(plan, redactor, raw, outcome)
        if new is raw:
            return node, False
        if edits is not None:
            edits.append((raw, new))
        return new.decode("utf-8", "surrogatepass"), True
    changed = False
    if isinstance(node, dict):
        for key, value in node.items():
            if isinstance(value, (str, dict, list)):
                node[key], c = _walk(plan, redactor, value, outcome, edits)
                changed = changed or c
    elif isinstance(node, list):
        for i, value in enumerate(node):
            if isinstance(value, (str, dict, list)):
                node[i], c = _walk(plan, redactor, value, outcome, edits)
                changed = changed or c
    return node, changed


def walk_strings(plan: DlpPlan, redactor: Redactor, doc: Any, outcome: Outcome) -> tuple[Any, bool]:
    """Scan and rewrite every string value of a parsed JSON document (containers in place)."""
    return _walk(plan, redactor, doc, outcome, None)


_JSON_SPACE = b" \t\r\n"


def _splice(body: bytes, edits: list[tuple[bytes, bytes]]) -> bytes | None:
    """Apply ``edits`` to a body without escapes, where every string is ``"<its bytes>"``
    (so quotes pair up in order); keys — strings followed by ``:`` — are never touched.

    Returns None (the caller then re-serializes) unless exactly the rewritten values are found.
    """
    replacement = dict(edits)
    lengths = {len(old) for old in replacement}
    wanted = Counter(old for old, _ in edits)
    done: Counter[bytes] = Counter()
    pieces: list[bytes] = []
    last = pos = 0
    size = len(body)
    while (opening := body.find(b'"', pos)) >= 0:
        closing = body.find(b'"', opening + 1)
        if closing < 0:
            return None
        pos = closing + 1
        if closing - opening - 1 not in lengths:
            continue  # cheaper than slicing and hashing a string that cannot be one of them
        old = body[opening + 1 : closing]
        new = replacement.get(old)
        if new is None:
            continue
        after = pos
        while after < size and body[after] in _JSON_SPACE:
            after += 1
        if after < size and body[after] == 0x3A:  # ":" - a key
            continue
        pieces.append(body[last : opening + 1])
        pieces.append(new)
        last = closing
        done[old] += 1
    if done != wanted:
        return None
    pieces.append(body[last:])
    return b"".join(pieces)


def inspect_json(plan: DlpPlan, redactor: Redactor, body: bytes, outcome: Outcome) -> tuple[bytes, Any]:
    """Scan the string values of a JSON document; returns (body, parsed document).

    A body without backslashes holds every string verbatim: if nothing in it can even start a
    finding, no string holds one (one scan instead of one per string), and rewritten strings
    are spliced into it in place (the rest of the document keeps its bytes and formatting)."""
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise Uninspectable("body declared as JSON does not parse") from exc
    verbatim = b"\\" not in body
    if verbatim and not plan.scanner.may_find(body):
        return body, doc
    edits: list[tuple[bytes, bytes]] | None = [] if verbatim else None
    doc, changed = _walk(plan, redactor, doc, outcome, edits)
    if not changed or outcome.blocked_by:
        return body, doc
    outcome.changed = True
    if edits:
        spliced = _splice(body, edits)
        if spliced is not None:
            return spliced, doc
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode("utf-8", "surrogatepass"), doc


def inspect_body(
    plan: DlpPlan,
    redactor: Redactor,
    body: bytes,
    content_type: str | None,
    content_encoding: str | None,
    outcome: Outcome,
) -> bytes:
    """Inspect a complete body; returns it rewritten (or itself). Raises :class:`Uninspectable`."""
    check_encoding(content_encoding)
    if len(body) > plan.max_body_bytes.value:
        raise Uninspectable(f"body larger than maxBodyBytes ({plan.max_body_bytes.value})")
    kind = body_kind(content_type)
    if kind == "binary":
        raise Uninspectable(f"binary content-type {content_type!r} cannot be inspected")
    if kind == "json":
        if not body.strip():
            return body
        return inspect_json(plan, redactor, body, outcome)[0]
    return inspect_text(plan, redactor, body, outcome)


def count_records(doc: Any) -> int:
    """How many records a response document carries (the largest plausible count).

    A top-level array; OpenAI lists and embeddings (``data``); TF Serving ``predictions`` /
    ``outputs``; OIP v2 ``outputs[].shape[0]``; ``choices``.
    """
    if isinstance(doc, list):
        return len(doc)
    if not isinstance(doc, dict):
        return 1
    counts = [1]
    for key in ("data", "predictions", "choices", "results", "embeddings"):
        value = doc.get(key)
        if isinstance(value, list):
            counts.append(len(value))
    outputs = doc.get("outputs")
    if isinstance(outputs, list):
        for out in outputs:
            shape = out.get("shape") if isinstance(out, dict) else None
            if isinstance(shape, list) and shape and isinstance(shape[0], int):
                counts.append(shape[0])
        if not any(isinstance(o, dict) and "shape" in o for o in outputs):
            counts.append(len(outputs))
    elif isinstance(outputs, dict):
        counts.extend(len(v) for v in outputs.values() if isinstance(v, list))
    return max(counts)
