"""The control plane's bounds against unauthenticated growth: sizes, refusal rates, slow clients.

``/v1/identity/sign`` needs no certificate (a joining sidecar has none), so anyone who can reach
the port can make the control plane parse, refuse and record. Everything such a caller can make
it keep is bounded here:

- request sizes: any JSON body (:data:`MAX_JSON_BODY`), a CSR (:data:`MAX_CSR_BYTES`), a join
  token (:data:`MAX_TOKEN_BYTES`); audit batches from mesh SVIDs keep their own larger cap;
- stored refusal reasons: :func:`clip` (the ledger and the audit chain keep at most
  :data:`MAX_REASON` characters);
- refusals per source address: :class:`RefusalLimiter` — past :data:`REFUSALS_PER_MINUTE` in a
  minute a source is answered 429 and nothing more is recorded for it until the window moves;
- slow clients: :data:`HEADER_TIMEOUT` seconds to send a request head or body, and at most
  :data:`MAX_CONNECTIONS` connections at once (:data:`MAX_CONNECTIONS_PER_SOURCE` per address).

And what an authenticated workload can make every other sidecar carry: at most
:data:`MAX_SIDECARS_PER_WORKLOAD` registered endpoints (and ACK rows) per workload.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict

__all__ = [
    "HEADER_TIMEOUT",
    "MAX_AUDIT_BODY",
    "MAX_CONNECTIONS",
    "MAX_CONNECTIONS_PER_SOURCE",
    "MAX_CSR_BYTES",
    "MAX_JSON_BODY",
    "MAX_REASON",
    "MAX_SIDECARS_PER_WORKLOAD",
    "MAX_TOKEN_BYTES",
    "REFUSALS_PER_MINUTE",
    "RefusalLimiter",
    "clip",
]

MAX_JSON_BODY = 1 << 20  # config apply texts included
MAX_AUDIT_BODY = 4 << 20  # one audit batch (mesh SVIDs only)
MAX_CSR_BYTES = 8 << 10  # a P-256 CSR with one URI SAN is under 1 KiB
MAX_TOKEN_BYTES = 256
MAX_REASON = 512
REFUSALS_PER_MINUTE = 30
HEADER_TIMEOUT = 10.0
MAX_CONNECTIONS = 512
MAX_CONNECTIONS_PER_SOURCE = 256
MAX_SIDECARS_PER_WORKLOAD = 64
_MAX_SOURCES = 4096


def clip(text: str, limit: int = MAX_REASON) -> str:
    """``text`` cut to ``limit`` characters, marked when cut (what gets stored of a reason)."""
    return text if len(text) <= limit else text[: limit - 14] + "… [truncated]"


class RefusalLimiter:
    """Refusals per source in a fixed one-minute window; thread-safe; remembers a bounded set."""

    def __init__(self, per_minute: int = REFUSALS_PER_MINUTE, window: float = 60.0) -> None:
        self.per_minute = per_minute
        self.window = window
        self._lock = threading.Lock()
        self._counts: OrderedDict[str, tuple[float, int]] = OrderedDict()
        self.suppressed = 0  # refusals answered 429 and not recorded

    def over(self, source: str) -> bool:
        """``source`` has used its budget this window (checked before any work is done for it)."""
        with self._lock:
            start, n = self._counts.get(source, (0.0, 0))
            if n >= self.per_minute and time.monotonic() - start < self.window:
                self.suppressed += 1
                return True
            return False

    def allow(self, source: str) -> bool:
        """Count one refusal for ``source``; False once it is past its budget this window."""
        now = time.monotonic()
        with self._lock:
            start, n = self._counts.pop(source, (now, 0))
            if now - start >= self.window:
                start, n = now, 0
            n += 1
            self._counts[source] = (start, n)
            while len(self._counts) > _MAX_SOURCES:
                self._counts.popitem(last=False)
            if n > self.per_minute:
                self.suppressed += 1
                return False
            return True
