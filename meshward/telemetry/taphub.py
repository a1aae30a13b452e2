"""The sidecar's live tap: request metadata handed to whoever watches, and nothing when nobody does.

One hub per sidecar process (:func:`tap_hub`, a runtime service). The telemetry filter
(:mod:`meshward.telemetry.filter`) calls :meth:`TapHub.publish` for each finished request only when
``hub.subscribers`` is non-empty (one attribute check per request while nobody watches). Each
event is metadata only — time, source identity, destination, method, path, model, operation,
status, decision and deciding policy, tokens, the TYPES of DLP findings — never a body, a
header value or a finding's value.

Each subscriber (an SSE connection on the admin listener, :mod:`meshward.proxy.admin`) has a
bounded queue: while its socket cannot take more (the transport paused writing) new events go
to the queue and the oldest are dropped past ``limit``; the data plane never waits for a reader.

``MESHWARD_TAP=off`` in the sidecar's environment disables the tap: the hub takes no
subscribers and the admin ``/tap`` answers 404 (for operators who want no request metadata on
the admin port at all; also the "no tap" baseline of ``bench.dashboard``).
"""

from __future__ import annotations

import json
import os
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from meshward.filters.base import RequestContext, SidecarRuntime

__all__ = ["TapHub", "TapSubscriber", "sse_event", "tap_event", "tap_hub"]

DEFAULT_QUEUE = 1000


class TapSubscriber:
    """One watcher: writes at once while its socket takes data, else queues (drop-oldest)."""

    __slots__ = ("dropped", "paused", "queue", "write")

    def __init__(self, write: Callable[[bytes], None], limit: int = DEFAULT_QUEUE) -> None:
        self.write = write
        self.queue: deque[bytes] = deque(maxlen=limit)
        self.paused = False
        self.dropped = 0

    def offer(self, data: bytes) -> None:
        if not self.paused:
            self.write(data)
            return
        if len(self.queue) == self.queue.maxlen:
            self.dropped += 1
        self.queue.append(data)

    def pause(self) -> None:
        self.paused = True

    def resume(self) -> None:
        """The socket drained: send what was queued (the writes may pause us again)."""
        self.paused = False
        while self.queue and not self.paused:
            self.write(self.queue.popleft())


class TapHub:
    """Fan-out of request events to the current subscribers (one per sidecar process)."""

    __slots__ = ("enabled", "published", "subscribers")

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.subscribers: list[TapSubscriber] = []  # empty: the telemetry filter skips the tap
        self.published = 0

    def subscribe(self, subscriber: TapSubscriber) -> None:
        if not self.enabled:
            raise PermissionError("the tap is disabled in this sidecar (MESHWARD_TAP=off)")
        self.subscribers = [*self.subscribers, subscriber]

    def unsubscribe(self, subscriber: TapSubscriber) -> None:
        self.subscribers = [s for s in self.subscribers if s is not subscriber]

    def publish(self, event: dict[str, Any]) -> None:
        data = sse_event(event)
        self.published += 1
        for subscriber in self.subscribers:
            subscriber.offer(data)


def sse_event(event: dict[str, Any]) -> bytes:
    """One Server-Sent Event carrying ``event`` as compact JSON."""
    return b"data: " + json.dumps(event, separators=(",", ":")).encode() + b"\n\n"


def tap_event(
    ctx: RequestContext, destination: str, destination_service: str, duration: float
) -> dict[str, Any]:
    """The metadata of one finished request as the destination's sidecar saw it."""
    tokens = ctx.tokens
    return {
        "time": round(time.time(), 3),
        "request_id": ctx.request_id,
        "source": ctx.peer.spiffe_id or f"plaintext {ctx.peer.ip}",
        "mtls": ctx.peer.spiffe_id is not None,
        "destination": destination,
        "destination_service": destination_service,
        "method": ctx.method,
        "path": ctx.path,
        "model": ctx.ai.model,
        "operation": ctx.ai.operation,
        "status": ctx.response_status,
        "decision": ctx.decision,
        "policy": ctx.policy,
        "flags": ctx.response_flags,
        "tokens": {"input": tokens.input, "output": tokens.output, "estimated": tokens.estimated},
        "dlp": sorted(ctx.findings),
        "duration_ms": round(duration * 1000, 3),
    }


def tap_hub(runtime: SidecarRuntime) -> TapHub:
    """This process's hub (made on first use)."""
    return runtime.service(TapHub, lambda: TapHub(enabled=os.environ.get("MESHWARD_TAP") != "off"))
