"""Whole-body inspection: JSON-aware for JSON, as text for text, refused or passed for the rest.

What is scanned is what the app reads after decoding (:mod:`meshward.dlp.decode`):

- JSON — declared (``application/json``, ``*+json``) *or sniffed* (a body that parses as a
  JSON object, array or string, whatever its ``Content-Type``, NDJSON line by line): only
  string values are scanned, *decoded* (``\u0040`` is ``@``), and rewritten, so the document
  stays valid JSON — an OpenAI ``messages[].content``, an OIP v2 ``BYTES`` tensor's ``data``,
  any nesting. UTF-16/UTF-32 documents are decoded the way ``json.loads(bytes)`` reads them and
  a rewritten one is re-encoded in the same encoding. Values hidden behind a duplicate key are
  scanned too (a rewritten document keeps the last one, as Python's parser does). Keys,
  numbers and booleans are not scanned (a card number sent as a JSON *number* is not seen;
  say so in your policy review). A rewritten document is re-serialized compactly
  (``ensure_ascii=False``).
- Forms (``application/x-www-form-urlencoded``): every name and value is scanned
  percent-decoded; a rewritten value is re-encoded.
- Text (``text/*``, XML, no content type): scanned as bytes, after decoding a declared
  ``charset`` that is not ASCII-compatible (UTF-16, UTF-7, EBCDIC...); an unknown charset is
  uninspectable.
- Anything else (images, audio, octet streams, multipart) and anything compressed
  (``Content-Encoding`` other than identity) or larger than ``maxBodyBytes`` is
  *uninspectable*: :class:`Uninspectable` is raised and the caller applies ``failMode``.
"""

from __future__ import annotations

import json
from typing import Any, Literal
from urllib.parse import quote_plus

from meshward.dlp.decode import (
    ASCII_COMPATIBLE,
    declared_charset,
    form_fields,
    json_encoding,
    loads_json,
    sniff_json,
)
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

BodyKind = Literal["json", "text", "sse", "ndjson", "binary"]
_TEXT_TYPES = frozenset(
    {
        "application/x-www-form-urlencoded",
        "application/xml",
        "application/javascript",
        "application/yaml",
        "application/graphql",
    }
)
_NDJSON_TYPES = frozenset({"application/x-ndjson", "application/jsonl", "application/jsonlines"})


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
    if media in _NDJSON_TYPES:
        return "ndjson"
    if media.startswith("text/") or media in _TEXT_TYPES:
        return "text"
    return "binary"


def check_encoding(content_encoding: str | None) -> None:
    if content_encoding and content_encoding.strip().lower() not in ("identity", ""):
        raise Uninspectable(f"content-encoding {content_encoding.strip().lower()!r} cannot be inspected")


def _walk(plan: DlpPlan, redactor: Redactor, node: Any, outcome: Outcome) -> tuple[Any, bool]:
    """Rewrite string values (containers in place); returns (node, whether anything changed)."""
    if isinstance(node, str):
        if len(node) < plan.scanner.min_length:
            return node, False
        raw = node.encode("utf-8", "surrogatepass")
        new = inspect_text(plan, redactor, raw, outcome)
        return (node, False) if new is raw else (new.decode("utf-8", "surrogatepass"), True)
    changed = False
    if isinstance(node, dict):
        for key, value in node.items():
            if isinstance(value, (str, dict, list)):
                node[key], c = _walk(plan, redactor, value, outcome)
                changed = changed or c
    elif isinstance(node, list):
        for i, value in enumerate(node):
            if isinstance(value, (str, dict, list)):
                node[i], c = _walk(plan, redactor, value, outcome)
                changed = changed or c
    return node, changed


def walk_strings(plan: DlpPlan, redactor: Redactor, doc: Any, outcome: Outcome) -> tuple[Any, bool]:
    """Scan and rewrite every string value of a parsed JSON document (containers in place)."""
    return _walk(plan, redactor, doc, outcome)


_JSON_SPACE = b" \t\r\n"


def _rewrite_verbatim(
    plan: DlpPlan, redactor: Redactor, body: bytes, spans: list[tuple[int, int]], outcome: Outcome
) -> bytes:
    """Rewrite the string values of a JSON body that has no backslash, in place.

    Without escapes every string is ``"<its UTF-8 bytes>"`` and quotes pair up in order. A
    string whose bytes hold a value overlaps one of ``spans`` (the candidate spans of the whole
    body), so only those strings are scanned — each on its own, as :func:`walk_strings` would.
    Keys (a string followed by ``:``) are never scanned. The rest keeps its bytes and layout.
    """
    pieces: list[bytes] = []
    last = pos = 0
    size = len(body)
    span_index, reach = 0, -1  # spans[:span_index] start before the current string's end
    minimum = plan.scanner.min_length
    while (opening := body.find(b'"', pos)) >= 0:
        closing = body.find(b'"', opening + 1)
        if closing < 0:
            break
        pos = closing + 1
        while span_index < len(spans) and spans[span_index][0] <= closing:
            reach = max(reach, spans[span_index][1])
            span_index += 1
        if reach <= opening or closing - opening - 1 < minimum:
            continue  # no candidate overlaps this string, or it is too short to hold a value
        after = pos
        while after < size and body[after] in _JSON_SPACE:
            after += 1
        if after < size and body[after] == 0x3A:  # ":" - a key
            continue
        value = body[opening + 1 : closing]
        new = inspect_text(plan, redactor, value, outcome)
        if new is not value:
            pieces.append(body[last : opening + 1])
            pieces.append(new)
            last = closing
    if not pieces:
        return body
    pieces.append(body[last:])
    return b"".join(pieces)


def inspect_json(plan: DlpPlan, redactor: Redactor, body: bytes, outcome: Outcome) -> tuple[bytes, Any]:
    """Scan the string values of a JSON document; returns (body, document as parsed before).

    A body without backslashes is scanned once as a whole for candidates, and only the strings
    they touch are inspected and spliced in place (:func:`_rewrite_verbatim`); otherwise every
    string of the parsed document is inspected and a changed document is re-serialized."""
    hidden: list[Any] = []
    try:
        encoding = json_encoding(body)
        doc = loads_json(body, hidden)
    except (ValueError, RecursionError) as exc:
        raise Uninspectable("body declared as JSON does not parse") from exc
    if encoding in ("utf-8", "utf-8-sig") and not hidden and b"\\" not in body:
        spans = plan.scanner.candidate_spans(body)
        if not spans:
            return body, doc
        new = _rewrite_verbatim(plan, redactor, body, spans, outcome)
        if new is body or outcome.blocked_by:
            return body, doc
        outcome.changed = True
        return new, doc
    try:
        doc, changed = _walk(plan, redactor, doc, outcome)
        # a value a later duplicate key hides: the app (last key wins) never reads it, but
        # another parser may; scanned, and dropped by the re-serialization if it held a value
        changed = _walk(plan, redactor, hidden, outcome)[1] or changed
    except RecursionError as exc:
        raise Uninspectable("JSON body nested too deeply to inspect") from exc
    if not changed or outcome.blocked_by:
        return body, doc
    outcome.changed = True
    text = json.dumps(doc, ensure_ascii=False, separators=(",", ":"))
    try:
        return text.encode(encoding, "surrogatepass"), doc
    except UnicodeError as exc:  # lone surrogates that UTF-16/32 cannot carry
        raise Uninspectable(f"rewritten JSON cannot be encoded back to {encoding}") from exc


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
    if kind == "json":
        if not body.strip():
            return body
        return inspect_json(plan, redactor, body, outcome)[0]
    # whatever the header says, a JSON body is read as JSON by the app: scan it decoded
    if sniff_json(body):
        return inspect_json(plan, redactor, body, outcome)[0]
    if kind == "binary":
        raise Uninspectable(f"binary content-type {content_type!r} cannot be inspected")
    lines = _json_lines(body)
    if lines is not None:
        return b"\n".join(
            inspect_json(plan, redactor, line, outcome)[0] if line.strip() else line for line in lines
        )
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media == "application/x-www-form-urlencoded":
        return _inspect_form(plan, redactor, body, outcome)
    charset = declared_charset(content_type)
    if charset is not None and charset not in ASCII_COMPATIBLE:
        return _inspect_charset(plan, redactor, body, charset, outcome)
    return inspect_text(plan, redactor, body, outcome)


def _json_lines(body: bytes) -> list[bytes] | None:
    """The lines of an NDJSON body (two or more, each a JSON document), else None."""
    if b"\n" not in body.strip():
        return None
    lines = body.split(b"\n")
    if not all(sniff_json(line) for line in lines if line.strip()):
        return None
    return lines


def _inspect_form(plan: DlpPlan, redactor: Redactor, body: bytes, outcome: Outcome) -> bytes:
    """Scan each decoded name and value of a urlencoded form; re-encode the ones rewritten."""
    pieces: list[bytes] = []
    last = 0
    for start, end, decoded in form_fields(body):
        if len(decoded) < plan.scanner.min_length:
            continue
        new = inspect_text(plan, redactor, decoded, outcome)
        if new is not decoded:
            pieces += [body[last:start], quote_plus(new).encode("ascii")]
            last = end
    if not pieces or outcome.blocked_by:
        return body
    outcome.changed = True
    return b"".join([*pieces, body[last:]])


def _inspect_charset(plan: DlpPlan, redactor: Redactor, body: bytes, charset: str, outcome: Outcome) -> bytes:
    """Text in a charset where ASCII is not ASCII bytes: scan it as UTF-8, re-encode if rewritten."""
    if charset == "?":
        raise Uninspectable("text body in an unknown charset cannot be inspected")
    try:
        text = body.decode(charset).encode("utf-8", "surrogatepass")
    except (UnicodeError, LookupError) as exc:
        raise Uninspectable(f"text body is not valid {charset}") from exc
    new = inspect_text(plan, redactor, text, outcome)
    if new is text or outcome.blocked_by:
        return body
    try:
        return new.decode("utf-8", "surrogatepass").encode(charset)
    except UnicodeError as exc:
        raise Uninspectable(f"rewritten text cannot be encoded back to {charset}") from exc


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
