"""The contract between the sidecar and its filters.

A request flows through the chain in order; each filter either lets it continue (returns
``None``) or answers locally (returns a :class:`Denial`). Responses flow back through every
filter whose ``on_request`` ran, in reverse order. Filters are built from a compiled config
snapshot and are replaced as a whole when a new generation arrives, so a filter never sees
config change under it. Each concern's module exposes ``build(snapshot, runtime) -> Filter |
None`` (None: nothing to enforce), called by :func:`meshward.proxy.chain.build_chain`.

Hot-path rules: no blocking I/O; ``on_request`` may await (a Redis round trip), the response
hooks are synchronous and must be cheap per chunk.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from mypy_extensions import mypyc_attr

from meshward.ai.types import AIRequest, TokenUsage
from meshward.authn.enduser import EndUser
from meshward.config.snapshot import WorkloadInfo

__all__ = [
    "Denial",
    "Filter",
    "Peer",
    "RequestContext",
    "ResponseDenied",
    "SidecarRuntime",
    "StreamAbort",
]


@dataclass(slots=True)
class Peer:
    """The caller as the sidecar saw it. ``spiffe_id`` is None for plaintext (PERMISSIVE)."""

    ip: str
    port: int
    spiffe_id: str | None = None  # full URI, e.g. spiffe://demo.local/ns/web/sa/webapp
    namespace: str | None = None
    service_account: str | None = None

    @property
    def principal(self) -> str | None:
        """Istio's principal form (no scheme), the form policies compare against."""
        return self.spiffe_id[len("spiffe://") :] if self.spiffe_id else None


@dataclass(slots=True)
class Denial:
    """A local answer instead of forwarding. ``kind`` picks the status mapping in one place.

    kinds: ``authn`` 401, ``authz`` 403, ``ratelimit`` 429, ``dlp`` 403, ``export`` 403, ``bad_request`` 400,
    ``too_large`` 413, ``unavailable`` 503.
    """

    kind: Literal["authn", "authz", "ratelimit", "dlp", "export", "bad_request", "too_large", "unavailable"]
    status: int
    message: str
    policy: str | None = None  # "ns/name" of the deciding policy
    rule: str | None = None  # rule index or limit name
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: dict[str, Any] = field(default_factory=dict)  # extra JSON fields
    reason: str | None = None  # why, in words (e.g. "no ALLOW policy matched"), for SDK-facing bodies


class StreamAbort(Exception):
    """Raised by a response hook to cut a stream: ``tail`` is written, then the stream ends."""

    def __init__(self, tail: bytes, reason: str) -> None:
        super().__init__(reason)
        self.tail = tail
        self.reason = reason


class ResponseDenied(StreamAbort):
    """Raised by a response hook to refuse the response with ``denial`` instead.

    From ``on_response_headers`` the upstream's head is never sent: the caller gets the
    denial's response (the one mapping, e.g. 403 naming the policy) and the upstream response
    is discarded. From ``on_response_chunk`` / ``on_response_end`` the same happens if no
    response byte has left yet (the filters still hold the whole body back, e.g. a buffered
    JSON document); once the head is out it acts as its :class:`StreamAbort` (``tail``).
    """

    def __init__(self, denial: Denial, tail: bytes = b"", reason: str = "") -> None:
        super().__init__(tail, reason or denial.message)
        self.denial = denial


@dataclass(slots=True)
class RequestContext:
    """Everything known about one request; filters read it and record their outcome in it."""

    request_id: str
    direction: Literal["inbound", "outbound"]
    peer: Peer
    method: str
    path: str  # normalized, no query string
    query: str
    host: str
    headers: dict[str, str]  # lower-case names; repeated headers joined with ", "; forwarded
    # upstream as they are here (telemetry replaces ``traceparent`` with this hop's span)
    destination_port: int
    start: float  # time.monotonic() when the head was parsed
    ai: AIRequest = field(default_factory=AIRequest)
    body: bytes | None = None  # the buffered request body, when a filter asked for it
    body_rewritten: bool = False  # set when a filter replaced ``body`` (sidecar re-frames it)
    trace_id: str | None = None
    end_user: EndUser | None = None  # set by the authn filter (a JWT or an API key)
    # Outcomes, filled along the way (telemetry and audit read them).
    decision: str = "allow"  # allow | deny | dry_run_deny | ...
    policy: str | None = None
    rule: str | None = None
    response_status: int = 0
    response_flags: str = "-"
    bytes_received: int = 0
    bytes_sent: int = 0
    upstream_duration: float | None = None
    tokens: TokenUsage = field(default_factory=TokenUsage)
    findings: dict[str, int] = field(default_factory=dict)  # DLP detector type -> count
    audit_marks: list[str] = field(default_factory=list)  # e.g. AUDIT policy names
    scratch: dict[str, Any] = field(default_factory=dict)  # per-filter private state


@mypyc_attr(allow_interpreted_subclasses=True)  # compiled; features and tests subclass it
class Filter:
    """Base filter: every hook is a no-op. Subclasses override what their concern needs."""

    name = "filter"
    # True if ``on_request`` needs no asyncio Task before its first real wait (no
    # ``asyncio.timeout()`` / ``current_task()`` up front): the sidecar may then run the request
    # inline in the parsing callback and create a Task only if something actually waits.
    eager_safe = False

    def wants_request_body(self, ctx: RequestContext) -> bool:
        """True if this filter needs the whole request body in ``on_request`` (bounded buffer)."""
        return False

    async def on_request(self, ctx: RequestContext) -> Denial | None:
        return None

    def on_response_headers(self, ctx: RequestContext, status: int, headers: list[tuple[str, str]]) -> bool:
        """See the response head; return True if this filter may rewrite the body (→ re-framed).

        May raise :class:`ResponseDenied` to answer a local response instead of this one.
        """
        return False

    def on_response_chunk(self, ctx: RequestContext, chunk: bytes) -> bytes:
        """Transform a body chunk (may hold bytes back and return b""); may raise StreamAbort.

        While every rewriting filter holds the body back the head is not sent either, so a
        :class:`ResponseDenied` raised here or in ``on_response_end`` can still answer locally.
        """
        return chunk

    def on_response_end(self, ctx: RequestContext) -> bytes:
        """The body ended: return any bytes held back."""
        return b""

    def on_complete(self, ctx: RequestContext) -> None:
        """Always called once, after the response or a local reply (release, account, log)."""


@dataclass
class SidecarRuntime:
    """What outlives a config generation in one sidecar process.

    Filter factories get it so that state which must survive a config swap (rate-limit
    buckets, metric collectors, the audit spool, Redis clients) is kept here, keyed by concern
    in ``shared``, instead of inside a filter that is rebuilt on every generation.
    """

    workload: WorkloadInfo
    trust_domain: str
    state_dir: Path | None = None  # the sidecar's own directory (spool, caches); None = in memory
    shared: dict[str, Any] = field(default_factory=dict)
    metrics_registry: Any = None  # prometheus_client.CollectorRegistry, served on /stats/prometheus
