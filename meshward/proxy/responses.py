"""Every local answer the sidecar gives, mapped in ONE place.

A :class:`~meshward.filters.base.Denial` from a filter, a protocol error from the parser, or an
upstream failure all become a short JSON body with a distinct status, and an Envoy-like response
flag recorded for telemetry. The body's shape follows the route's AI protocol, so SDKs show why:

- OpenAI-style routes: OpenAI's ``{"error": {"message", "type", "code", "param"}}``, the message
  naming the reason, the policy (and rule or limit) and the request id (an ``openai`` SDK
  exception's ``str()`` includes it);
- Open Inference Protocol v2: ``{"error": "<the same message>"}``;
- anything else: ``{"error": "<short message>", "request_id": ...}``.

Every shape keeps ``request_id`` and the denial's extra fields (e.g. a 429's ``retry_after``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from meshward.filters.base import Denial, DenialKind
from meshward.http.framing import clean_fields, response_head

__all__ = [
    "DENIALS",
    "FAILURES",
    "NOT_DELIVERED",
    "NOT_DELIVERED_HEADER",
    "Failure",
    "LocalReply",
    "Refusal",
    "denial_reply",
    "error_document",
    "explain",
    "failure_reply",
    "render",
]


@dataclass(frozen=True, slots=True)
class Refusal:
    """What a kind of :class:`~meshward.filters.base.Denial` answers: status and response flag."""

    status: int
    flag: str


# THE mapping of a filter's Denial: its kind decides status and flag (Envoy's flags where one
# exists); its facts become the body's extra fields. Filters never choose a status themselves.
DENIALS: dict[DenialKind, Refusal] = {
    "authn": Refusal(401, "UAEX"),
    "authz": Refusal(403, "RBAC"),
    "ratelimit": Refusal(429, "RL"),
    "dlp": Refusal(403, "DLP"),
    "export": Refusal(403, "DLP"),
    "bad_request": Refusal(400, "DPE"),
    "not_found": Refusal(404, "NR"),
    "too_large": Refusal(413, "DPE"),
    "unavailable": Refusal(503, "UH"),
}


@dataclass(frozen=True, slots=True)
class Failure:
    """A failure of the proxy path itself: status, response flag, message for the caller."""

    status: int
    flag: str
    message: str


# The sidecar's own failures, by name. Flags follow Envoy: UF upstream connection failure,
# UC upstream connection termination, UT upstream timeout, NR no route, DPE downstream protocol
# error, UPE upstream protocol error; UIM (Meshward) upstream identity mismatch.
FAILURES: dict[str, Failure] = {
    "no_route": Failure(502, "NR", "no route: not a mesh service"),
    "no_endpoints": Failure(503, "UH", "no healthy upstream: the service has no serving sidecar"),
    "upstream_connect": Failure(503, "UF", "upstream connect error"),
    "upstream_tls": Failure(502, "UF", "upstream TLS handshake failed"),
    "upstream_identity": Failure(502, "UIM", "upstream identity mismatch"),
    "upstream_reset": Failure(502, "UC", "upstream closed the connection before responding"),
    "upstream_protocol": Failure(502, "UPE", "upstream sent an invalid response"),
    "upstream_timeout": Failure(504, "UT", "upstream request timeout"),
    "request_timeout": Failure(408, "SI", "request not received in time"),
    "no_app": Failure(503, "UH", "no application behind this sidecar"),
    "not_ready": Failure(503, "UH", "sidecar is not ready (no identity or config yet)"),
    "connect_method": Failure(
        405,
        "DPE",
        "https:// through the sidecar is not supported (no CONNECT tunnels): call mesh services over "
        "plain http://SERVICE.NAMESPACE/ and the sidecar encrypts the hop with mutual TLS itself",
    ),
    "internal": Failure(500, "DPE", "internal proxy error"),
}


# Failures where the request never reached an app: a caller's sidecar may send it elsewhere,
# whatever its method (meshward.proxy.forward). Said in this response header.
NOT_DELIVERED = frozenset({"upstream_connect", "no_app", "not_ready", "no_endpoints"})
NOT_DELIVERED_HEADER = "x-meshward-not-delivered"
_PLAIN_HTTP_REASON = b" Use plain http:// to mesh services (the sidecar adds mTLS)\r\n"


@dataclass(slots=True)
class LocalReply:
    """A rendered local answer: the bytes, its status and flag, and whether to close."""

    data: bytes
    status: int
    flag: str
    close: bool


# OpenAI's error ``type`` and ``code`` per status of a local answer.
_OPENAI_ERRORS: dict[int, tuple[str, str]] = {
    400: ("invalid_request_error", "bad_request"),
    403: ("permission_error", "access_denied"),
    405: ("invalid_request_error", "method_not_allowed"),
    408: ("timeout_error", "request_timeout"),
    413: ("invalid_request_error", "request_too_large"),
    429: ("rate_limit_error", "rate_limit_exceeded"),
}


def explain(message: str, request_id: str, denial: Denial | None = None) -> str:
    """The one-line message an SDK shows: the reason, the deciding policy, the request id."""
    parts = [message]
    if denial is not None:
        if denial.reason and denial.reason not in message:
            parts[0] = f"{message}: {denial.reason}"
        if denial.policy and denial.policy not in parts[0]:
            rule = (
                f" {'limit' if denial.kind == 'ratelimit' else 'rule'} {denial.rule}" if denial.rule else ""
            )
            parts.append(f"policy {denial.policy}{rule}")
        if "retry_after" in denial.facts:
            parts.append(f"retry after {denial.facts['retry_after']}s")
    parts.append(f"request id {request_id}")
    return f"{parts[0]} ({'; '.join(parts[1:])})"


def error_document(
    status: int, message: str, request_id: str, protocol: str | None = None, denial: Denial | None = None
) -> dict[str, Any]:
    """The JSON body of a local answer on a route of ``protocol`` (see the module docstring)."""
    if protocol == "openai":
        kind, code = _OPENAI_ERRORS.get(
            status, ("api_error", "service_unavailable" if status == 503 else "error")
        )
        detail = {"message": explain(message, request_id, denial), "type": kind, "code": code, "param": None}
        return {"error": detail, "request_id": request_id}
    if protocol == "oip":
        return {"error": explain(message, request_id, denial), "request_id": request_id}
    return {"error": message, "request_id": request_id}


def render(
    status: int,
    message: str,
    request_id: str,
    extra: dict[str, Any] | None = None,
    headers: list[tuple[str, str]] | None = None,
    close: bool = False,
    head_only: bool = False,
    protocol: str | None = None,
    denial: Denial | None = None,
) -> bytes:
    doc = error_document(status, message, request_id, protocol, denial)
    if extra:
        for key, value in extra.items():
            doc.setdefault(key, value)
    body = json.dumps(doc, separators=(",", ":")).encode() + b"\n"
    hdrs: list[tuple[bytes, bytes]] = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"x-request-id", request_id.encode("latin-1")),
    ]
    if headers:
        hdrs.extend(clean_fields([(n.encode("latin-1"), v.encode("latin-1")) for n, v in headers]))
    if close:
        hdrs.append((b"connection", b"close"))
    head = response_head(status, None, hdrs)
    return head if head_only else head + body


SDK_MAX_RETRY_AFTER = 60  # seconds: longer Retry-After values are ignored by the openai SDK


def _retry_after(headers: list[tuple[str, str]]) -> int:
    for name, value in headers:
        if name.lower() == "retry-after" and value.isdigit():
            return int(value)
    return 0


def denial_reply(
    denial: Denial, request_id: str, close: bool = False, head_only: bool = False, protocol: str | None = None
) -> LocalReply:
    """The one mapping from a filter's Denial to the response the caller gets."""
    refusal = DENIALS[denial.kind]
    status = refusal.status
    headers = denial.headers
    if protocol == "openai" and status == 429 and _retry_after(headers) > SDK_MAX_RETRY_AFTER:
        # The openai SDK ignores a Retry-After over 60 s and retries at once; tell it not to.
        headers = [*headers, ("x-should-retry", "false")]
    data = render(
        status, denial.message, request_id, denial.facts, headers, close, head_only, protocol, denial
    )
    return LocalReply(data, status, refusal.flag, close)


def failure_reply(
    name: str,
    request_id: str,
    detail: str | None = None,
    close: bool = False,
    head_only: bool = False,
    protocol: str | None = None,
) -> LocalReply:
    """The response for one of the sidecar's own :data:`FAILURES` (``detail`` appended)."""
    failure = FAILURES[name]
    message = f"{failure.message}: {detail}" if detail else failure.message
    code = failure.status
    headers = [(NOT_DELIVERED_HEADER, "1")] if name in NOT_DELIVERED else None
    data = render(
        code, message, request_id, headers=headers, close=close, head_only=head_only, protocol=protocol
    )
    if name == "connect_method":  # a failed tunnel shows only its status line: say it there
        data = data.replace(b" Method Not Allowed\r\n", _PLAIN_HTTP_REASON, 1)
    return LocalReply(data, code, failure.flag, close)
