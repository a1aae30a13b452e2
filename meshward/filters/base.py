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

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar, cast

from mypy_extensions import mypyc_attr

from meshward.ai.types import AIRequest, TokenUsage
from meshward.authn.enduser import EndUser
from meshward.config.snapshot import WorkloadInfo

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

__all__ = [
    "Denial",
    "DenialKind",
    "Filter",
    "Peer",
    "RequestContext",
    "ResponseDenied",
    "SecretFetch",
    "SidecarRuntime",
    "StreamAbort",
]

S = TypeVar("S")


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


DenialKind = Literal[
    "authn", "authz", "ratelimit", "dlp", "export", "bad_request", "not_found", "too_large", "unavailable"
]


class Denial:
    """A local answer instead of forwarding: what kind of refusal it is, and the facts of it.

    The response is decided in ONE place, :func:`meshward.proxy.responses.denial_reply`: the
    ``kind`` gives the status and the response flag (``authn`` 401, ``authz`` 403,
    ``ratelimit`` 429, ``dlp`` 403, ``export`` 403, ``bad_request`` 400, ``not_found`` 404,
    ``too_large`` 413, ``unavailable`` 503); ``facts`` are the extra JSON fields of the body
    (e.g. a 429's ``retry_after``, the deciding policy); ``headers`` are added as they are.
    ``status`` is kept for older callers and readers: 0 (the default) means "the kind's", and a
    status that disagrees with the kind does not change the answer. ``body`` is ``facts``.
    """

    __slots__ = ("facts", "headers", "kind", "message", "policy", "reason", "rule", "status")

    def __init__(
        self,
        kind: DenialKind,
        status: int = 0,
        message: str = "",
        policy: str | None = None,
        rule: str | None = None,
        headers: list[tuple[str, str]] | None = None,
        body: dict[str, Any] | None = None,
        reason: str | None = None,
        facts: dict[str, Any] | None = None,
    ) -> None:
        self.kind: DenialKind = kind
        self.status = status
        self.message = message
        self.policy = policy  # "ns/name" of the deciding policy
        self.rule = rule  # rule index or limit name
        self.headers: list[tuple[str, str]] = headers if headers is not None else []
        merged: dict[str, Any] = dict(body) if body else {}
        if facts:
            merged.update(facts)
        self.facts = merged
        self.reason = reason  # why, in words (e.g. "no ALLOW policy matched"), for SDK-facing bodies

    @property
    def body(self) -> dict[str, Any]:
        """The extra JSON fields of the answer (the facts), under their older name."""
        return self.facts

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Denial):
            return NotImplemented
        return all(getattr(self, n) == getattr(other, n) for n in self.__slots__)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Denial({self.kind!r}, {self.message!r}, policy={self.policy!r}, facts={self.facts!r})"


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


#: ``async (name) -> value``: an egress credential fetched over the sidecar's mTLS identity.
SecretFetch = Callable[[str], Awaitable[str]]


@dataclass
class SidecarRuntime:
    """What outlives a config generation in one sidecar process.

    Filter factories get it so that state which must survive a config swap (rate-limit
    buckets, metric collectors, the audit outputs, Redis clients) is kept here instead of
    inside a filter that is rebuilt on every generation. Each concern keeps its state in one
    object of its own type, reached with :meth:`service` through an accessor in the concern's
    own module (``counters(runtime)``, ``detection_state(runtime)``, ...): the type is the key,
    so no string is shared between packages. What the sidecar process itself hands to filters
    is a typed attribute (``secret_fetch``).
    """

    workload: WorkloadInfo
    trust_domain: str
    state_dir: Path | None = None  # the sidecar's own directory (spool, caches); None = in memory
    metrics_registry: CollectorRegistry | None = None  # served on /stats/prometheus
    # Set by the process that talks to the control plane (meshward.proxy.runner); None: no
    # egress credential can be had.
    secret_fetch: SecretFetch | None = None
    _services: dict[type[Any], Any] = field(default_factory=dict, init=False, repr=False)

    def service(self, kind: type[S], make: Callable[[], S] | None = None) -> S:
        """This process's one ``kind``: made on first use by ``make()`` (default ``kind()``)."""
        found = self._services.get(kind)
        if found is None:
            found = self._services[kind] = make() if make is not None else kind()
        return cast(S, found)

    def provide(self, service: object) -> None:
        """Install ``service`` as this process's one of its type (before anyone made another)."""
        kind = type(service)
        if kind in self._services:
            raise RuntimeError(f"the runtime already has a {kind.__name__}")
        self._services[kind] = service
