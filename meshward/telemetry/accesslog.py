"""The sidecar's access log: one JSON line per request, written off the event loop.

Fields: ``time`` (RFC 3339, UTC), ``request_id``, ``trace_id``, ``direction``, ``source``
(SPIFFE ID, or null for plaintext), ``source_ip``, ``end_user`` (the authenticated end user: a
JWT's iss/sub or an API key's principal, else null), ``destination`` (this workload's SPIFFE
ID) and ``destination_service``, ``method``, ``path`` (normalized, WITHOUT the query string:
a query may carry keys or personal data), ``model``, ``operation``, ``status``, ``decision``,
``policy``, ``rule``, ``response_flags``, ``bytes_received``, ``bytes_sent``, ``duration_ms``,
``upstream_duration_ms``, ``tokens`` ({input, output, estimated}), ``dlp_findings`` (counts by
detector type). Never bodies, headers or credentials.

:class:`AccessLog` takes lines on the event loop (a list append) and a daemon thread writes them
in batches every ``flush_interval`` (reopening the file when a log rotator moved it); if the
destination stalls (a full pipe on stdout), lines
beyond ``max_buffered_bytes`` are dropped and counted rather than blocking the sidecar.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from json.encoder import encode_basestring_ascii
from pathlib import Path
from typing import Any

from meshward.audit.chain import compact_json
from meshward.filters.base import RequestContext

__all__ = ["AccessLog", "access_line", "access_record"]

_encode = compact_json  # ASCII-escaped: any string a request carries encodes


_last_second: list[Any] = [-1, ""]  # (second, formatted prefix): one strftime per second


def _rfc3339(epoch: float) -> str:
    seconds = int(epoch)
    cache = _last_second
    if cache[0] != seconds:
        cache[1] = time.strftime("%Y-%m-%dT%H:%M:%S.", time.gmtime(seconds))
        cache[0] = seconds
    return f"{cache[1]}{int((epoch - seconds) * 1000):03d}Z"


def access_record(
    ctx: RequestContext, destination: str, destination_service: str, now: float, duration: float
) -> dict[str, Any]:
    """The access-log fields of one finished request (plain data, no I/O)."""
    peer = ctx.peer
    ai = ctx.ai
    tokens = ctx.tokens
    upstream = ctx.upstream_duration
    return {
        "time": _rfc3339(now),
        "request_id": ctx.request_id,
        "trace_id": ctx.trace_id,
        "direction": ctx.direction,
        "source": peer.spiffe_id,
        "source_ip": peer.ip,
        "end_user": ctx.end_user.principal if ctx.end_user is not None else None,
        "destination": destination,
        "destination_service": destination_service,
        "method": ctx.method,
        "path": ctx.path,
        "model": ai.model,
        "operation": ai.operation,
        "status": ctx.response_status,
        "decision": ctx.decision,
        "policy": ctx.policy,
        "rule": ctx.rule,
        "response_flags": ctx.response_flags,
        "bytes_received": ctx.bytes_received,
        "bytes_sent": ctx.bytes_sent,
        "duration_ms": round(duration * 1000, 3),
        "upstream_duration_ms": None if upstream is None else round(upstream * 1000, 3),
        "tokens": {"input": tokens.input, "output": tokens.output, "estimated": tokens.estimated}
        if tokens.total
        else None,
        "dlp_findings": ctx.findings or None,
    }


_s = encode_basestring_ascii  # C: a JSON string literal, quotes included, ASCII-escaped


def _opt(value: str | None) -> str:
    return "null" if value is None else _s(value)


def access_line(
    ctx: RequestContext, destination_json: str, service_json: str, now: float, duration: float
) -> str:
    """:func:`access_record` as its JSON line, formatted directly (the sidecar's hot path).

    ``destination_json`` / ``service_json`` are the JSON string literals of this workload's
    identity and service (encoded once per generation).
    """
    peer = ctx.peer
    ai = ctx.ai
    tokens = ctx.tokens
    upstream = ctx.upstream_duration
    tokens_json = (
        f'{{"input":{tokens.input},"output":{tokens.output},"estimated":{"true" if tokens.estimated else "false"}}}'
        if tokens.total
        else "null"
    )
    return (
        f'{{"time":"{_rfc3339(now)}","request_id":{_s(ctx.request_id)},"trace_id":{_opt(ctx.trace_id)},'
        f'"direction":"{ctx.direction}","source":{_opt(peer.spiffe_id)},"source_ip":{_s(peer.ip)},'
        f'"end_user":{_opt(ctx.end_user.principal if ctx.end_user is not None else None)},'
        f'"destination":{destination_json},"destination_service":{service_json},'
        f'"method":{_s(ctx.method)},"path":{_s(ctx.path)},"model":{_opt(ai.model)},'
        f'"operation":{_s(ai.operation)},"status":{int(ctx.response_status)},"decision":{_s(ctx.decision)},'
        f'"policy":{_opt(ctx.policy)},"rule":{_opt(ctx.rule)},"response_flags":{_s(ctx.response_flags)},'
        f'"bytes_received":{int(ctx.bytes_received)},"bytes_sent":{int(ctx.bytes_sent)},'
        f'"duration_ms":{round(duration * 1000, 3)!r},'
        f'"upstream_duration_ms":{"null" if upstream is None else repr(round(upstream * 1000, 3))},'
        f'"tokens":{tokens_json},"dlp_findings":{compact_json(ctx.findings) if ctx.findings else "null"}}}'
    )


class AccessLog:
    """Buffered JSON-lines writer to a file (append, 0600) or to stdout (``path=None``)."""

    def __init__(
        self,
        path: Path | None,
        flush_interval: float = 0.2,
        max_buffered_bytes: int = 8 << 20,
        on_drop: Callable[[int], None] | None = None,
    ) -> None:
        self.path = path
        if path is None:
            self._fd = os.dup(1)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self.flush_interval = flush_interval
        self.max_buffered_bytes = max_buffered_bytes
        self.on_drop = on_drop
        self.dropped = 0
        self._lines: deque[str] = deque()  # append (loop) and popleft (writer) are thread-safe
        self._buffered = 0  # approximate (racy by design): only bounds memory
        self._wake = threading.Event()
        self._write_lock = threading.Lock()
        self._closed = False
        self._writer = threading.Thread(target=self._run, name="meshward-access-log", daemon=True)
        self._writer.start()

    def write(self, record: dict[str, Any]) -> None:
        """Queue one record (called on the event loop: no I/O here)."""
        self.write_line(_encode(record))

    def write_line(self, line: str) -> None:
        """Queue one already-encoded JSON line (no newline)."""
        if self._buffered > self.max_buffered_bytes:
            self.dropped += 1
            if self.on_drop is not None:
                self.on_drop(1)
            return
        self._lines.append(line)
        self._buffered += len(line)

    def _take(self) -> bytes:
        queue = self._lines
        lines = [queue.popleft() for _ in range(len(queue))]
        self._buffered = max(0, self._buffered - sum(map(len, lines)))
        if not lines:
            return b""
        return ("\n".join(lines) + "\n").encode()

    def _run(self) -> None:
        while not self._closed:
            self._wake.wait(self.flush_interval)
            self._wake.clear()
            self._flush_once()

    def _reopen_if_rotated(self) -> None:
        """A log rotator renamed or removed the file: continue in a fresh one at ``path``."""
        if self.path is None:
            return
        try:
            current = os.stat(self.path).st_ino
        except FileNotFoundError:
            current = -1
        if current != os.fstat(self._fd).st_ino:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            old, self._fd = self._fd, fd
            os.close(old)

    def _flush_once(self) -> None:
        with self._write_lock:  # the writer thread, and flush()/close() on the caller's
            data = self._take()
            if not data:
                return
            with contextlib.suppress(OSError):
                self._reopen_if_rotated()
            view = memoryview(data)
            while view:
                try:
                    written = os.write(self._fd, view)
                except OSError:
                    return  # the destination is gone (closed stdout): nothing sensible to do
                view = view[written:]

    def flush(self) -> None:
        """Write everything queued so far (synchronously; tests and shutdown)."""
        self._flush_once()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._wake.set()
        self._writer.join(timeout=2.0)
        self._flush_once()
        os.close(self._fd)
