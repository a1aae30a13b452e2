"""Watching the mesh's live tap: read the sidecars' ``/tap`` streams, filter, fan out.

:class:`TapSource` reads one sidecar's admin ``/tap`` (Server-Sent Events) in a thread;
:class:`TapRelay` merges every running sidecar's stream and hands each event to the
subscribers whose :class:`TapFilter` matches. Sidecars are tapped only while someone watches:
the relay opens the streams at the first subscriber and closes them after the last one leaves,
so an idle dashboard costs the data plane nothing.

Each relay subscriber has a bounded queue (drop-oldest): a slow browser or terminal loses old
events, it never holds up the relay, the other subscribers or the sidecars.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from meshward.identity.spiffe import InvalidSpiffeId, parse_identity

__all__ = ["TapFilter", "TapRelay", "TapSource", "TapWatcher", "format_event"]

log = logging.getLogger("meshward.dashboard.tap")

Event = dict[str, Any]
SidecarList = Callable[[], dict[str, str]]  # workload "ns/name" -> admin "host:port"


@dataclass(frozen=True, slots=True)
class TapFilter:
    """Which events a watcher wants; every given field must match (empty = any)."""

    source: str = ""  # an identity in any accepted spelling, or a fragment of its URI
    destination: str = ""  # service, service.namespace, or workload ns/name
    status: str = ""  # "403", or a class "4xx"
    decision: str = ""  # allow | deny | dry_run_deny ...
    trust_domain: str = ""

    def source_uri(self) -> str:
        if not self.source:
            return ""
        try:
            return parse_identity(self.source, self.trust_domain or "cluster.local").uri
        except InvalidSpiffeId:
            return ""

    def matches(self, event: Event, source_uri: str | None = None) -> bool:
        if self.source:
            uri = self.source_uri() if source_uri is None else source_uri
            src = str(event.get("source", ""))
            # Without the mesh's trust domain a short ns/sa matches any trust domain.
            tail = uri[uri.find("/ns/") :] if uri and not self.trust_domain else None
            if src != uri and not (tail and src.endswith(tail)) and (uri or self.source not in src):
                return False
        if self.destination:
            service = str(event.get("destination_service", ""))
            names = {service, service.split(".", 1)[0], str(event.get("workload", ""))}
            if self.destination not in names:
                return False
        if self.status:
            status = str(event.get("status", ""))
            wanted = self.status.lower()
            if wanted.endswith("xx") and len(wanted) == 3:
                if status[:1] != wanted[:1]:
                    return False
            elif status != wanted:
                return False
        return not self.decision or event.get("decision") == self.decision


class TapWatcher:
    """One subscriber of a relay: a filter and a bounded queue (drop-oldest)."""

    def __init__(self, tap_filter: TapFilter, limit: int = 1000) -> None:
        self.filter = tap_filter
        self._source_uri = tap_filter.source_uri()
        self.queue: deque[Event] = deque(maxlen=limit)
        self.dropped = 0
        self._ready = threading.Condition()

    def offer(self, event: Event) -> None:
        if not self.filter.matches(event, self._source_uri):
            return
        with self._ready:
            if len(self.queue) == self.queue.maxlen:
                self.dropped += 1
            self.queue.append(event)
            self._ready.notify()

    def take(self, timeout: float) -> list[Event]:
        """Every queued event, waiting up to ``timeout`` seconds for the first."""
        with self._ready:
            if not self.queue:
                self._ready.wait(timeout)
            events = list(self.queue)
            self.queue.clear()
            return events


class TapSource:
    """One sidecar's ``/tap`` stream, read in a daemon thread until :meth:`close`."""

    def __init__(self, workload: str, admin: str, deliver: Callable[[Event], None]) -> None:
        self.workload = workload
        self.admin = admin
        self.deliver = deliver
        self.connected = threading.Event()
        self._closed = False
        self._conn: http.client.HTTPConnection | None = None
        self._thread = threading.Thread(target=self._run, name=f"tap-{workload}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        host, _, port = self.admin.rpartition(":")
        while not self._closed:
            try:
                self._stream(host, int(port))
            except (OSError, http.client.HTTPException, ValueError) as exc:
                log.debug("tap %s (%s): %s", self.workload, self.admin, exc)
            self.connected.clear()
            if not self._closed:
                time.sleep(1.0)  # the sidecar restarts: try again

    def _stream(self, host: str, port: int) -> None:
        conn = http.client.HTTPConnection(host, port, timeout=10)
        self._conn = conn
        try:
            conn.request("GET", "/tap")
            resp = conn.getresponse()
            if resp.status != 200:
                raise http.client.HTTPException(f"/tap answered {resp.status}")
            if conn.sock is not None:
                conn.sock.settimeout(None)  # events arrive whenever requests do
            self.connected.set()
            while not self._closed:
                line = resp.fp.readline(1 << 20)
                if not line:
                    return
                if line.startswith(b"data: "):
                    event = json.loads(line[6:])
                    if isinstance(event, dict):
                        event["workload"] = self.workload
                        self.deliver(event)
        finally:
            conn.close()

    def close(self) -> None:
        self._closed = True
        conn = self._conn
        if conn is not None and conn.sock is not None:
            with contextlib.suppress(OSError):
                conn.sock.shutdown(socket.SHUT_RDWR)

    def wait_connected(self, timeout: float) -> bool:
        return self.connected.wait(timeout)


class TapRelay:
    """Every sidecar's tap, merged, for as long as at least one watcher is subscribed."""

    def __init__(self, sidecars: SidecarList, refresh: float = 2.0) -> None:
        self.sidecars = sidecars
        self.refresh = refresh
        self._watchers: list[TapWatcher] = []
        self._sources: dict[str, TapSource] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._keeper: threading.Thread | None = None

    @property
    def sources(self) -> dict[str, TapSource]:
        return dict(self._sources)

    def subscribe(self, watcher: TapWatcher) -> None:
        with self._lock:
            self._watchers = [*self._watchers, watcher]
            self._sync()
            if self._keeper is None:
                self._keeper = threading.Thread(target=self._keep, name="tap-relay", daemon=True)
                self._keeper.start()

    def unsubscribe(self, watcher: TapWatcher) -> None:
        with self._lock:
            self._watchers = [w for w in self._watchers if w is not watcher]
            if not self._watchers:
                self._sync()
                self._wake.set()

    def wait_connected(self, timeout: float) -> bool:
        """True once every current sidecar's stream is open."""
        deadline = time.monotonic() + timeout
        for source in list(self._sources.values()):
            if not source.wait_connected(max(0.0, deadline - time.monotonic())):
                return False
        return True

    def _deliver(self, event: Event) -> None:
        for watcher in self._watchers:
            watcher.offer(event)

    def _sync(self) -> None:
        """Open a stream per running sidecar while watched; close them all when not (lock held)."""
        wanted = self._safe_sidecars() if self._watchers else {}
        for workload in list(self._sources):
            if self._sources[workload].admin != wanted.get(workload):
                self._sources.pop(workload).close()
        for workload, admin in wanted.items():
            if workload not in self._sources:
                self._sources[workload] = TapSource(workload, admin, self._deliver)

    def _safe_sidecars(self) -> dict[str, str]:
        try:
            return self.sidecars()
        except Exception as exc:  # a mesh being stopped: keep what is open
            log.debug("tap: listing sidecars failed: %s", exc)
            return {w: s.admin for w, s in self._sources.items()}

    def _keep(self) -> None:
        while True:
            self._wake.wait(self.refresh)
            self._wake.clear()
            with self._lock:
                self._sync()
                if not self._watchers:
                    self._keeper = None
                    return


def format_event(event: Event) -> str:
    """One line per request, like ``linkerd viz tap``."""
    stamp = time.strftime("%H:%M:%S", time.gmtime(float(event.get("time", 0))))
    parts = [
        stamp,
        f"src={event.get('source')}",
        f"dst={event.get('destination_service')}",
        f":method={event.get('method')}",
        f":path={event.get('path')}",
        f":status={event.get('status')}",
        f"decision={event.get('decision')}",
    ]
    if event.get("policy"):
        parts.append(f"policy={event['policy']}")
    if event.get("model"):
        parts.append(f"model={event['model']}")
    if event.get("operation") not in (None, "other"):
        parts.append(f"op={event['operation']}")
    tokens = event.get("tokens") or {}
    if tokens.get("input") or tokens.get("output"):
        parts.append(f"tokens={tokens.get('input', 0)}+{tokens.get('output', 0)}")
    if event.get("dlp"):
        parts.append(f"dlp={','.join(event['dlp'])}")
    parts.append(f"latency={event.get('duration_ms')}ms")
    if not event.get("mtls"):
        parts.append("tls=none")
    return " ".join(parts)
