"""The outbound glue: send one request to a service through its :class:`ServicePlan`.

:func:`forward_to_service` is what :mod:`meshward.proxy.outbound` calls once it has built the
request head for a mesh service. It

1. reads the body when the service's ``ModelRoute`` needs the model name (rules on ``models``,
   aliases) or mirrors, and asks :meth:`CompiledRoute.decide` for the subset (and an alias);
2. picks an endpoint of that subset (:class:`~meshward.rollout.balancer.Balancer`: least
   request, ejected endpoints skipped) and forwards;
3. stays on the exchange as its ``observer``: a connect failure, an answer saying the request
   never reached an app (``x-meshward-not-delivered``: the peer sidecar could not connect to
   it), or — for an idempotent request — a reset before the answer or a 502/503/504, is retried
   on another endpoint (at most ``MAX_TRIES`` in all) before the caller sees anything, when the
   request was buffered whole (small bodies are: up to ``SMALL_BODY``, or ``MAX_BODY`` for
   idempotent methods); every outcome feeds outlier detection and the service's window of
   outcomes (an audit event, four per analysis interval);
4. shadows a mirrored request to the mirror subset (:mod:`meshward.proxy.mirror`) and
   compares the two answers when both are in.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from meshward.ai.protocol import classify
from meshward.http.parser import ResponseHead
from meshward.proxy.forwarded import framing
from meshward.proxy.mirror import MirrorResult, send_mirror
from meshward.proxy.responses import NOT_DELIVERED_HEADER
from meshward.proxy.upstream import UpstreamError, UpstreamTarget
from meshward.rollout.compare import answers_differ
from meshward.rollout.rewrite import rewrite_body_model, rewrite_path_model
from meshward.telemetry.outputs import telemetry_outputs

if TYPE_CHECKING:
    from meshward.proxy.exchange import Exchange
    from meshward.proxy.routes import Route
    from meshward.rollout.plan import ServicePlan

__all__ = ["IDEMPOTENT", "MAX_BODY", "MAX_TRIES", "Attempt", "forward_to_service"]

MAX_TRIES = 3
MAX_BODY = 1 << 20  # a body read to route by model (or to replay) is at most this large
SMALL_BODY = 64 << 10  # any request up to this size is buffered whole, so it can be replayed
MAX_CAPTURE = 1 << 20  # a primary answer kept for the mirror comparison
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
_RETRY_STATUS = frozenset({502, 503, 504})
MAX_MIRRORS = 64  # shadow requests in flight per sidecar; more are skipped, never queued
_MIRRORS: set[asyncio.Task[MirrorResult | None]] = set()  # strong references while they run


class Attempt:
    """The exchange's observer while it is served by a service plan."""

    __slots__ = (
        "capture",
        "data",
        "ex",
        "idempotent",
        "key",
        "mirror",
        "plan",
        "route",
        "started",
        "subset",
        "tried",
    )

    def __init__(self, ex: Exchange, route: Route, subset: str | None) -> None:
        self.ex = ex
        self.route = route
        self.plan: ServicePlan = route.plan
        self.subset = subset
        self.key = ""
        self.tried: set[str] = set()
        self.data: bytes | None = None  # the whole request, when it may be replayed
        self.idempotent = False
        self.started = 0.0
        self.capture: list[bytes] | None = None
        self.mirror: asyncio.Task[MirrorResult | None] | None = None

    def target(self, key: str) -> UpstreamTarget:
        return self.route.targets[self.plan.keys.index(key)]

    def next_key(self, now: float) -> str | None:
        """An endpoint of the subset not tried yet; when the subset has none left, any other
        endpoint of the service (a failing version must not fail requests another can serve)."""
        tried = frozenset(self.tried)
        plan = self.plan
        for candidates, panic in ((plan.candidates(self.subset), False), (plan.keys, True)):
            i = plan.balancer.pick(candidates, now, tried, panic)
            if i >= 0:
                return candidates[i]
        return None

    async def send(self, ex: Exchange, head: bytes, body: bytes | None) -> None:
        """Forward to endpoints of the subset until one accepts the connection."""
        balancer = self.plan.balancer
        last: UpstreamError | None = None
        while len(self.tried) < MAX_TRIES:
            key = self.next_key(ex.loop.time())
            if key is None:
                break
            self.tried.add(key)
            self.key = key
            balancer.started(key)
            try:
                await ex.forward(self.target(key), head, body)
                return
            except UpstreamError as exc:  # nothing was sent (connect, TLS, identity): try another
                balancer.finished(key, False, ex.loop.time())
                self.key = ""
                last = exc
        if last is not None:
            raise last
        ex.fail("no_endpoints", self.route.entry.host)

    def _retry(self, status: int) -> bool:
        """Start the request again on another endpoint (the current one failed it)."""
        ex = self.ex
        data = self.data
        if data is None or len(self.tried) >= MAX_TRIES or ex.finished:
            return False
        now = ex.loop.time()
        if self.next_key(now) is None:
            return False
        if self.key:
            plan = self.plan
            plan.balancer.finished(self.key, False, now)
            subset = plan.subset_of(self.key)
            if plan.window is not None and subset is not None:  # the failed try counts against it
                plan.window.observe(subset, status, now - self.started)
            self.key = ""
        ex.release_upstream(False)
        ex.task = ex.loop.create_task(self._resend(ex, data))
        return True

    async def _resend(self, ex: Exchange, data: bytes) -> None:
        try:
            await self.send(ex, data, b"")
        except UpstreamError as exc:
            ex.fail(exc.name, exc.detail)

    # -- observer hooks (called by the exchange) -------------------------------------------------
    def on_head(self, rh: ResponseHead) -> bool:
        """True when this answer is dropped and the request retried elsewhere."""
        if rh.status not in _RETRY_STATUS:
            return False
        if self.idempotent or _not_delivered(rh):
            return self._retry(rh.status)
        return False

    def on_error(self, name: str) -> bool:
        if not self.idempotent or name not in ("upstream_reset", "upstream_timeout"):
            return False
        return self._retry(504 if name == "upstream_timeout" else 502)

    def on_data(self, data: bytes) -> None:
        cap = self.capture
        if cap is not None:
            if sum(map(len, cap)) + len(data) > MAX_CAPTURE:
                self.capture = None
            else:
                cap.append(data)

    def on_finish(self) -> None:
        ex = self.ex
        now = ex.loop.time()
        plan = self.plan
        status = ex.status
        if self.key:
            plan.balancer.finished(self.key, 0 < status < 500, now)
        window = plan.window
        route = plan.route
        if window is None or route is None:
            return
        latency = now - self.started
        subset = plan.subset_of(self.key) if self.key else self.subset
        window.observe(subset or self.subset or route.stable, status, latency)
        mirror = self.mirror
        if mirror is not None:
            body = b"".join(self.capture) if self.capture is not None else None
            mirror.add_done_callback(lambda t: _compare(plan, t, status, body, latency))
        _schedule_flush(ex, plan)


def _compare(
    plan: ServicePlan,
    task: asyncio.Task[MirrorResult | None],
    status: int,
    body: bytes | None,
    latency: float,
) -> None:
    if task.cancelled() or task.exception() is not None or plan.window is None:
        return
    shadow = task.result()
    if shadow is None or body is None:
        return
    differ = answers_differ(status, body, shadow.status, shadow.body)
    plan.window.compared_mirror(shadow.subset, differ, status != shadow.status, shadow.latency - latency)


def _schedule_flush(ex: Exchange, plan: ServicePlan) -> None:
    window = plan.window
    if window is None or window.scheduled:
        return
    window.scheduled = True
    runtime = ex.conn.sidecar.runtime
    route = plan.route
    route_name = route.name if route is not None else ""

    def flush() -> None:
        window.scheduled = False
        event = window.drain(route_name, plan.generation, int(time.time() * 1000))
        if event is not None:
            telemetry_outputs(runtime).audit(event)

    ex.loop.call_later(route.report_every if route is not None else 5.0, flush)


_NOT_DELIVERED = NOT_DELIVERED_HEADER.encode()


def _not_delivered(rh: ResponseHead) -> bool:
    return any(n.lower() == _NOT_DELIVERED for n, _ in rh.headers)


def _header(ex: Exchange, name: str) -> str | None:
    wanted = name.encode("latin-1")
    for n, v in ex.head.headers:
        if n.lower() == wanted:
            return v.decode("latin-1")
    return None


async def forward_to_service(ex: Exchange, route: Route, fields: bytes, path: str) -> None:
    """Serve ``ex`` from ``route``: ``fields`` is the head for the upstream (request line, target
    ``path``, fields) without its framing, which is added here once the body is known."""
    plan = route.plan
    compiled = plan.route
    req = ex.head
    body: bytes | None = None
    method = req.method
    complete = not req.has_body
    length = req.content_length
    if req.has_body and not req.upgrade and (length or 0) <= MAX_BODY:
        wants = compiled is not None and (compiled.needs_model or compiled.mirror_subset is not None)
        replayable = length is not None and (length <= SMALL_BODY or method in IDEMPOTENT)
        if wants or replayable:
            body = await ex.read_body(MAX_BODY)
            complete = True
    subset: str | None = None
    mirror_subset: str | None = None
    mirror_fields, mirror_body = fields, body
    if compiled is not None:
        model = None
        if compiled.needs_model:
            lower = {n.decode("latin-1").lower(): v.decode("latin-1") for n, v in req.headers}
            model = classify(method, path.partition("?")[0], lower, body).model
        plan.requests += 1
        decision = compiled.decide(plan.principal, lambda n: _header(ex, n), model, plan.requests)
        subset, mirror_subset = decision.subset, decision.mirror
        if decision.model is not None and model is not None:
            fields, body = _aliased(fields, body, path, model, decision.model)
        if mirror_subset is not None and model is not None:
            alias = compiled.aliases.get(model, {}).get(mirror_subset)
            if alias is not None:
                mirror_fields, mirror_body = _aliased(mirror_fields, mirror_body, path, model, alias)
    head = fields + framing(ex, body)
    attempt = Attempt(ex, route, subset)
    attempt.started = ex.loop.time()
    attempt.idempotent = method in IDEMPOTENT
    if complete and not req.upgrade:
        attempt.data = head + (body or b"")
    if mirror_subset is not None and complete and not req.upgrade and len(_MIRRORS) < MAX_MIRRORS:
        mirror_head = mirror_fields + framing(ex, mirror_body)
        attempt.capture = []
        task = ex.loop.create_task(
            send_mirror(ex.conn.sidecar, route, mirror_subset, mirror_head + (mirror_body or b""))
        )
        _MIRRORS.add(task)
        task.add_done_callback(_MIRRORS.discard)
        attempt.mirror = task
    ex.observer = attempt
    await attempt.send(ex, head, body)


def _aliased(
    fields: bytes, body: bytes | None, path: str, model: str, alias: str
) -> tuple[bytes, bytes | None]:
    """The request for the model's ``alias``: in the OIP path, else in the OpenAI body."""
    new_path = rewrite_path_model(path, model, alias)
    if new_path is not None:
        return _retarget(fields, new_path), body
    if body is not None:
        rewritten = rewrite_body_model(body, alias)
        if rewritten is not None:
            return fields, rewritten
    return fields, body


def _retarget(head: bytes, path: str) -> bytes:
    """``head`` with its request target replaced by ``path``."""
    first, sep, rest = head.partition(b"\r\n")
    method, _, target = first.partition(b" ")
    _, _, version = target.rpartition(b" ")
    return b"%s %s %s%s%s" % (method, path.encode(), version, sep, rest)
