"""AI protocol classification: which protocol a request speaks, its operation and its model.

Pure and sans-IO: a method, a normalized path, the headers and (optionally) the buffered body
in, an :class:`~meshward.ai.types.AIRequest` out. It never raises on arbitrary input; a body
that is not the JSON object we expect simply yields no model.

Protocols recognised (first match wins):

- Open Inference Protocol v2 (KServe, Triton): ``/v2``, ``/v2/health/{live,ready}``,
  ``/v2/models/{m}[/versions/{v}][/ready|/infer|/generate|/generate_stream|...]``,
  ``/v2/repository/...`` (admin).
- TF Serving REST: ``/v1/models/{m}[/versions/{v}|/labels/{l}]:predict|:classify|:regress``
  (infer) and its status/metadata URLs (metadata).
- OpenAI-compatible (OpenAI, vLLM, Ollama, Azure OpenAI deployments):
  ``/v1/chat/completions`` (chat), ``/v1/completions`` (completion), ``/v1/embeddings``
  (embed), ``/v1/responses`` (chat), ``/v1/models[/{m}]`` (metadata), ... The model comes
  from the path when the protocol puts it there, else from the JSON body's ``model``.
- anything else: ``http`` / ``other``.

The sidecar calls :func:`classify` on the request head (``body=None``), asks
:func:`needs_body` whether buffering the body would reveal the model, and classifies again
with the body when a filter needs the model. Everything here is precompiled at import time.

The body is classified by what it *is*, not by what ``Content-Type`` claims: the app (FastAPI,
Starlette, the example models) parses a JSON body sent as ``text/plain`` all the same, so a
denied model must not hide behind the header. A body that parses as JSON (in any encoding
``json.loads`` reads) gives its ``model``; a urlencoded form or a ``multipart/form-data`` body
(OpenAI's audio and image uploads) gives its ``model`` field.
"""

from __future__ import annotations

import json
import re
from email.parser import BytesParser
from email.policy import HTTP
from typing import Any, Final
from urllib.parse import parse_qs

from meshward.ai.types import AIOperation, AIRequest

__all__ = ["classify", "estimate_prompt_tokens", "needs_body"]

# --- OpenAI-compatible --------------------------------------------------------------------

# Exact paths after the ``/v1`` prefix (also accepted under ``/openai/v1``).
_OPENAI_EXACT: Final[dict[str, AIOperation]] = {
    "/chat/completions": "chat",
    "/completions": "completion",
    "/embeddings": "embed",
    "/responses": "chat",
    "/models": "metadata",
    "/moderations": "infer",
    "/rerank": "infer",
    "/score": "infer",
    "/tokenize": "infer",
    "/detokenize": "infer",
    "/images/generations": "infer",
    "/images/edits": "infer",
    "/images/variations": "infer",
    "/audio/speech": "infer",
    "/audio/transcriptions": "infer",
    "/audio/translations": "infer",
}
# Path prefixes (after ``/v1``) of management APIs: files, fine-tuning, batches, stores.
_OPENAI_ADMIN_PREFIXES: Final = (
    "/files",
    "/fine_tuning/",
    "/fine-tunes",
    "/batches",
    "/uploads",
    "/vector_stores",
    "/assistants",
    "/threads",
    "/organization/",
)
# Azure OpenAI: /openai/deployments/{deployment}/chat/completions (the deployment is the model).
_AZURE_DEPLOYMENT: Final = re.compile(r"^/openai/deployments/([^/]+)(/.*)$")
# Operations whose JSON body names the model.
_BODY_MODEL_OPERATIONS: Final[frozenset[str]] = frozenset({"chat", "completion", "embed", "infer"})

# --- TF Serving ---------------------------------------------------------------------------

# /v1/models/{m}[/versions/{v}|/labels/{l}]:predict|:classify|:regress
_TF_INFER: Final = re.compile(
    r"^/v1/models/([^/:]+)(?:/versions/\d+|/labels/[^/:]+)?:(predict|classify|regress)$"
)
# /v1/models/{m}/versions/{v}, /v1/models/{m}/labels/{l}, optionally followed by /metadata.
_TF_METADATA: Final = re.compile(r"^/v1/models/([^/:]+)(?:/versions/\d+|/labels/[^/:]+)?/metadata$")
_TF_VERSIONED: Final = re.compile(r"^/v1/models/([^/:]+)/(?:versions/\d+|labels/[^/:]+)$")

# --- Open Inference Protocol v2 -----------------------------------------------------------

# /v2/models/{m}[/versions/{v}][/{tail}]
_OIP_MODEL: Final = re.compile(r"^/v2/models/([^/]+)(?:/versions/([^/]+))?(/[^/]+)?$")
_OIP_MODEL_TAIL: Final[dict[str, tuple[AIOperation, bool]]] = {
    "": ("metadata", False),
    "/ready": ("metadata", False),
    "/config": ("metadata", False),
    "/stats": ("metadata", False),
    "/infer": ("infer", False),
    "/generate": ("infer", False),
    "/generate_stream": ("infer", True),
}
_OIP_REPOSITORY_MODEL: Final = re.compile(r"^/v2/repository/models/([^/]+)/(load|unload)$")
_OIP_EXACT: Final[dict[str, AIOperation]] = {
    "/v2": "metadata",
    "/v2/health/live": "health",
    "/v2/health/ready": "health",
    "/v2/models/stats": "metadata",
    "/v2/repository/index": "admin",
}
# Triton extensions that change server state.
_OIP_ADMIN_PREFIXES: Final = (
    "/v2/repository/",
    "/v2/systemsharedmemory",
    "/v2/cudasharedmemory",
    "/v2/trace",
    "/v2/logging",
)

_MAX_WALK_DEPTH: Final = 8
# Parts of a chat message that are not text (base64 images and audio would inflate estimates).
_NON_TEXT_KEYS: Final[frozenset[str]] = frozenset(
    {"image_url", "image", "input_image", "input_audio", "audio", "file", "input_file", "b64_json"}
)
_PROMPT_KEYS: Final = ("messages", "prompt", "input", "instructions", "documents", "query", "text")


def classify(method: str, path: str, headers: dict[str, str], body: bytes | None) -> AIRequest:
    """Classify one request. ``path`` is the normalized path without the query string;
    ``headers`` have lower-case names. Any input is classified (malformed bodies give no
    model); there is deliberately no catch-all here: a bug must fail the request closed, not
    turn an ``admin`` call into an unclassified one that a DENY policy would no longer see."""
    return _classify(method, path, headers, body)


def needs_body(ai: AIRequest, method: str, headers: dict[str, str]) -> bool:
    """Would buffering the body reveal the model? True for OpenAI-style POSTs whose model is
    not already known from the path, whatever their ``Content-Type`` (the body decides)."""
    if ai.protocol != "openai" or ai.model is not None or method != "POST":
        return False
    return ai.operation in _BODY_MODEL_OPERATIONS


def _classify(method: str, path: str, headers: dict[str, str], body: bytes | None) -> AIRequest:
    if path.startswith("/v2"):
        return _classify_oip(path)
    if path.startswith("/v1/models/"):
        tf = _classify_tfserving(path)
        if tf is not None:
            return tf
    if path.startswith("/v1/"):
        return _classify_openai(method, path[3:], headers, body)
    if path.startswith("/openai/"):
        if path.startswith("/openai/v1/"):
            return _classify_openai(method, path[10:], headers, body)
        m = _AZURE_DEPLOYMENT.match(path)
        if m is not None:
            ai = _classify_openai(method, m.group(2), headers, body)
            if ai.protocol == "openai":
                ai.model = m.group(1)
            return ai
    return AIRequest()


def _classify_oip(path: str) -> AIRequest:
    exact = _OIP_EXACT.get(path)
    if exact is not None:
        return AIRequest(protocol="oip", operation=exact)
    m = _OIP_MODEL.match(path)
    if m is not None:
        tail = _OIP_MODEL_TAIL.get(m.group(3) or "")
        if tail is not None:
            return AIRequest(protocol="oip", operation=tail[0], model=m.group(1), streaming=tail[1])
    m = _OIP_REPOSITORY_MODEL.match(path)
    if m is not None:
        return AIRequest(protocol="oip", operation="admin", model=m.group(1))
    if path.startswith(_OIP_ADMIN_PREFIXES):
        return AIRequest(protocol="oip", operation="admin")
    if path == "/v2/" or path.startswith("/v2/"):
        return AIRequest(protocol="oip", operation="other")
    return AIRequest()  # e.g. "/v2beta": not the protocol


def _classify_tfserving(path: str) -> AIRequest | None:
    m = _TF_INFER.match(path)
    if m is not None:
        return AIRequest(protocol="tfserving", operation="infer", model=m.group(1))
    m = _TF_METADATA.match(path) or _TF_VERSIONED.match(path)
    if m is not None:
        return AIRequest(protocol="tfserving", operation="metadata", model=m.group(1))
    return None


def _classify_openai(method: str, rest: str, headers: dict[str, str], body: bytes | None) -> AIRequest:
    """``rest`` is the path after the ``/v1`` prefix."""
    operation = _OPENAI_EXACT.get(rest)
    model: str | None = None
    if operation is None:
        if rest.startswith("/models/") and len(rest) > 8:
            operation, model = "metadata", rest[8:]
        elif rest.startswith("/responses/"):
            operation = "metadata"
        elif rest.startswith(_OPENAI_ADMIN_PREFIXES):
            operation = "admin"
        else:
            return AIRequest(protocol="openai", operation="other")
    ai = AIRequest(protocol="openai", operation=operation, model=model)
    if body and method == "POST" and operation in _BODY_MODEL_OPERATIONS:
        _read_openai_body(ai, body, headers.get("content-type", ""))
    return ai


def _read_openai_body(ai: AIRequest, body: bytes, content_type: str) -> None:
    try:
        doc = json.loads(body)  # any encoding json.loads reads, whatever the header says
    except (ValueError, RecursionError):
        ai.model = _form_model(body, content_type)
        return
    if not isinstance(doc, dict):
        return
    model = doc.get("model")
    if isinstance(model, str) and model:
        ai.model = model
    ai.streaming = doc.get("stream") is True
    for key in ("max_completion_tokens", "max_tokens", "max_output_tokens"):
        cap = doc.get(key)
        if isinstance(cap, int) and not isinstance(cap, bool) and cap >= 0:
            ai.max_output_tokens = cap
            break
    ai.prompt_tokens_estimate = estimate_prompt_tokens(doc)


def estimate_prompt_tokens(doc: dict[str, Any]) -> int | None:
    """A cheap estimate of the prompt's tokens from an OpenAI-style request document.

    About four characters per token for text, one per token id in pre-tokenized prompts;
    image and audio parts are not counted. None when the document carries no prompt."""
    chars = 0
    token_ids = 0
    found = False
    for key in _PROMPT_KEYS:
        value = doc.get(key)
        if value is None:
            continue
        found = True
        c, t = _count_text(value, 0)
        chars += c
        token_ids += t
    if not found:
        return None
    return (chars + 3) // 4 + token_ids


def _count_text(value: object, depth: int) -> tuple[int, int]:
    """(characters of text, bare token ids) under ``value``, bounded in depth."""
    if isinstance(value, str):
        return len(value), 0
    if depth >= _MAX_WALK_DEPTH:
        return 0, 0
    chars = ids = 0
    if isinstance(value, list):
        for item in value:
            if isinstance(item, int) and not isinstance(item, bool):
                ids += 1
            else:
                c, t = _count_text(item, depth + 1)
                chars += c
                ids += t
    elif isinstance(value, dict):
        for key, item in value.items():
            if key in _NON_TEXT_KEYS:
                continue
            c, t = _count_text(item, depth + 1)
            chars += c
            ids += t
    return chars, ids


def _form_model(body: bytes, content_type: str) -> str | None:
    """The ``model`` field of a urlencoded or multipart form (None if absent)."""
    media = content_type.split(";", 1)[0].strip().lower()
    values: list[str] = []
    if media == "application/x-www-form-urlencoded":
        try:
            values = parse_qs(body.decode("latin-1"), keep_blank_values=True).get("model", [])
        except ValueError:
            return None
    elif media == "multipart/form-data":
        message = BytesParser(policy=HTTP).parsebytes(
            b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + body
        )
        if message.is_multipart():
            for part in message.iter_parts():
                if part.get_param("name", header="content-disposition") == "model":
                    payload = part.get_payload(decode=True)
                    if isinstance(payload, bytes):
                        values.append(payload.decode("utf-8", "replace").strip())
    # repeated: the last one, as Starlette/FastAPI (vLLM & co.) and JSON's last key read it
    return values[-1] if values and values[-1] else None
