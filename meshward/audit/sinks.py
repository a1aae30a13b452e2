"""SIEM sinks: the control plane forwards stored audit records to syslog, a file, or HTTP.

Each sink runs as its own asyncio task with its own cursor on disk
(``<state>/audit/sinks/<name>.json``: the last sequence number sent, per chain). The store is
the queue: a sink that is down holds nothing up (ingest never waits for it) and misses nothing
(when it is back, the task resends from its cursor). Delivery is at-least-once: a batch whose
delivery is uncertain is sent again.

- ``syslog``: RFC 5424 messages, octet-counting framing (RFC 6587 §3.4.1) over TCP, or TLS
  (RFC 5425) with ``tls: true`` (server verified against ``caFile``, else the system roots);
- ``file``: one line per record (OCSF JSON or CEF), appended and fsynced;
- ``http``: a JSON array of OCSF events per POST; any 2xx is success.

Configured in the ``Mesh`` resource: ``spec.audit.sinks`` (see
:class:`meshward.resources.mesh.AuditSink`).

One bad record never halts forwarding: a record the sink's format cannot render, or one the
receiver refuses outright (HTTP 4xx other than 408/429, found by resending a refused batch one
record at a time), is quarantined — a line in ``<state>/audit/sinks/<name>.quarantine.jsonl``
naming chain, sequence number, hash and the error — and the cursor moves past it. Only a
receiver that is down or overloaded (connection errors, 5xx, 408, 429) is retried, with backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import ssl
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import httpx

from meshward.audit.chain import AuditRecord
from meshward.audit.formats import to_cef, to_ocsf, to_ocsf_json, to_syslog
from meshward.audit.store import AuditStore, ChainInfo
from meshward.resources.mesh import AuditSink
from meshward.retry import Backoff

__all__ = [
    "FileSink",
    "HttpSink",
    "Sink",
    "SinkForwarder",
    "SinkRejected",
    "SinkThread",
    "SyslogSink",
    "make_sink",
]

log = logging.getLogger(__name__)

Batch = list[tuple[ChainInfo, AuditRecord]]


class SinkRejected(Exception):
    """The receiver refused the batch for what it holds (resending it as it is will not help)."""


class Sink:
    """Delivers one batch; raises on failure (the forwarder retries, or quarantines on
    :class:`SinkRejected`)."""

    def __init__(self, config: AuditSink) -> None:
        self.config = config
        self.name = config.name

    def _message(self, info: ChainInfo, record: AuditRecord) -> str:
        if self.config.format == "cef":
            return to_cef(record, info.source, info.chain)
        return to_ocsf_json(record, info.source, info.chain)

    def render(self, info: ChainInfo, record: AuditRecord) -> object:
        """The record as this sink sends it; raising means it cannot be exported (quarantine)."""
        return self._message(info, record)

    async def send(self, batch: Batch) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        return None


class SyslogSink(Sink):
    def __init__(self, config: AuditSink) -> None:
        super().__init__(config)
        assert config.address is not None
        host, _, port = config.address.rpartition(":")
        self.host, self.port = host, int(port)
        self._ssl: ssl.SSLContext | None = None
        if config.tls:
            self._ssl = ssl.create_default_context(cafile=config.ca_file)
        self._writer: asyncio.StreamWriter | None = None
        self._reader: asyncio.StreamReader | None = None

    def render(self, info: ChainInfo, record: AuditRecord) -> object:
        return self.frame(info, record)

    def frame(self, info: ChainInfo, record: AuditRecord) -> bytes:
        if self.config.format == "cef":
            msg = to_syslog(record, info.source, info.chain)
            head, _, _ = msg.rpartition("] ")
            msg = f"{head}] {to_cef(record, info.source, info.chain)}"
        else:
            msg = to_syslog(record, info.source, info.chain)
        data = msg.encode()
        return b"%d %s" % (len(data), data)

    async def _connect(self) -> asyncio.StreamWriter:
        if self._writer is None or self._writer.is_closing():
            await self.close()
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(
                    self.host,
                    self.port,
                    ssl=self._ssl,
                    server_hostname=(self.config.server_name or self.host) if self._ssl else None,
                ),
                10.0,
            )
            self._reader, self._writer = reader, writer
            return writer
        return self._writer

    async def send(self, batch: Batch) -> None:
        writer = await self._connect()
        try:
            writer.write(b"".join(self.frame(info, record) for info, record in batch))
            await asyncio.wait_for(writer.drain(), 10.0)
            await asyncio.sleep(0)
            # A peer that closed the connection shows as EOF: the batch may be lost, send again.
            if (self._reader is not None and self._reader.at_eof()) or writer.is_closing():
                raise ConnectionError("syslog receiver closed the connection")
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._writer.wait_closed(), 2.0)
        self._writer = self._reader = None


class FileSink(Sink):
    def __init__(self, config: AuditSink) -> None:
        super().__init__(config)
        assert config.path is not None
        self.path = Path(config.path)

    def _write(self, data: bytes) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)

    async def send(self, batch: Batch) -> None:
        data = "".join(self._message(info, record) + "\n" for info, record in batch).encode()
        await asyncio.get_running_loop().run_in_executor(None, self._write, data)


class HttpSink(Sink):
    def __init__(self, config: AuditSink) -> None:
        super().__init__(config)
        assert config.url is not None
        verify: ssl.SSLContext | bool = (
            ssl.create_default_context(cafile=config.ca_file) if config.ca_file else True
        )
        self._client = httpx.AsyncClient(timeout=10.0, verify=verify)

    async def send(self, batch: Batch) -> None:
        assert self.config.url is not None
        if self.config.format == "cef":
            payload: list[Any] = [to_cef(record, info.source, info.chain) for info, record in batch]
        else:
            payload = [to_ocsf(record, info.source, info.chain) for info, record in batch]
        response = await self._client.post(self.config.url, json=payload)
        code = response.status_code
        if 400 <= code < 500 and code not in (408, 429):
            raise SinkRejected(f"HTTP sink refused the batch: {code}")
        if not 200 <= code < 300:
            raise ConnectionError(f"HTTP sink answered {code}")

    async def close(self) -> None:
        await self._client.aclose()


def make_sink(config: AuditSink) -> Sink:
    return {"syslog": SyslogSink, "file": FileSink, "http": HttpSink}[config.type](config)


class SinkForwarder:
    """Runs every configured sink; ``await forwarder.run()`` in the control plane's loop/thread."""

    def __init__(
        self,
        store: AuditStore,
        sinks: Iterable[AuditSink | Sink],
        *,
        poll_interval: float = 0.5,
        max_backoff: float = 30.0,
    ) -> None:
        self.store = store
        self.sinks = [s if isinstance(s, Sink) else make_sink(s) for s in sinks]
        self.poll_interval = poll_interval
        self.max_backoff = max_backoff
        self.cursor_dir = store.directory / "sinks"
        self.cursor_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.sent: dict[str, int] = {s.name: 0 for s in self.sinks}
        self.errors: dict[str, str | None] = {s.name: None for s in self.sinks}
        self.quarantined: dict[str, int] = {s.name: 0 for s in self.sinks}
        self._set_aside: dict[str, set[tuple[str, int]]] = {
            s.name: set() for s in self.sinks
        }  # until the cursor passes
        self._stopping = asyncio.Event()

    def _cursor_path(self, sink: Sink) -> Path:
        return self.cursor_dir / f"{sink.name}.json"

    def load_cursor(self, sink: Sink) -> dict[str, int]:
        try:
            data = json.loads(self._cursor_path(sink).read_text())
            return {str(k): int(v) for k, v in data.items()}
        except (FileNotFoundError, ValueError):
            return {}

    def _save_cursor(self, sink: Sink, cursor: dict[str, int]) -> None:
        path = self._cursor_path(sink)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(cursor, sort_keys=True))
        os.replace(tmp, path)

    def _quarantine(self, sink: Sink, info: ChainInfo, record: AuditRecord, error: str) -> None:
        """Set one record aside for this sink (and say so); forwarding moves on past it."""
        if (info.slug, record.seq) in self._set_aside[sink.name]:
            return  # already quarantined: this is a retry of the batch it was in
        self._set_aside[sink.name].add((info.slug, record.seq))
        line = json.dumps(
            {
                "slug": info.slug,
                "source": info.source,
                "seq": record.seq,
                "hash": record.hash,
                "error": error[:300],
            }
        )
        fd = os.open(
            self.cursor_dir / f"{sink.name}.quarantine.jsonl", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600
        )
        try:
            os.write(fd, line.encode() + b"\n")
        finally:
            os.close(fd)
        self.quarantined[sink.name] += 1
        log.error("audit sink %s: quarantined %s seq %d: %s", sink.name, info.slug, record.seq, error[:300])

    def _exportable(self, sink: Sink, batch: Batch) -> Batch:
        """The records of ``batch`` the sink can render; the others are quarantined."""
        good: Batch = []
        for info, record in batch:
            try:
                sink.render(info, record)
            except Exception as exc:
                self._quarantine(sink, info, record, f"cannot be formatted: {type(exc).__name__}: {exc}")
                continue
            good.append((info, record))
        return good

    async def _deliver(self, sink: Sink, batch: Batch) -> None:
        """Send ``batch``; a refused one is resent record by record, quarantining the refused."""
        if not batch:
            return
        try:
            await sink.send(batch)
            return
        except SinkRejected as exc:
            if len(batch) == 1:
                self._quarantine(sink, batch[0][0], batch[0][1], str(exc))
                return
        for item in batch:  # transient errors here propagate: the whole batch is retried
            try:
                await sink.send([item])
            except SinkRejected as exc:
                self._quarantine(sink, item[0], item[1], str(exc))

    def _pending(self, cursor: dict[str, int], limit: int) -> Batch:
        batch: Batch = []
        for info in self.store.chains():
            after = cursor.get(info.slug, 0)
            if info.seq <= after:
                continue
            for record in self.store.read(info.slug, after, limit - len(batch)):
                batch.append((info, record))
            if len(batch) >= limit:
                break
        return batch

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        try:
            await asyncio.gather(*(self._run_sink(sink) for sink in self.sinks))
        finally:
            for sink in self.sinks:
                with contextlib.suppress(Exception):
                    await sink.close()

    async def _wait(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    async def _run_sink(self, sink: Sink) -> None:
        loop = asyncio.get_running_loop()
        cursor = self.load_cursor(sink)
        delay = Backoff(0.2, self.max_backoff, "spread")
        while not self._stopping.is_set():
            batch = await loop.run_in_executor(None, self._pending, cursor, sink.config.batch_size)
            if not batch:
                await self._wait(self.poll_interval)
                continue
            try:
                await self._deliver(sink, self._exportable(sink, batch))
            except Exception as exc:
                self.errors[sink.name] = f"{type(exc).__name__}: {exc}"
                log.warning(
                    "audit sink %s: %s; retrying in %.1fs", sink.name, self.errors[sink.name], delay.peek()
                )
                await self._wait(delay.next())
                continue
            delay.reset()
            self.errors[sink.name] = None
            for info, record in batch:
                cursor[info.slug] = max(cursor.get(info.slug, 0), record.seq)
            self._save_cursor(sink, cursor)
            self._set_aside[sink.name].clear()
            self.sent[sink.name] += len(batch)


class SinkThread:
    """Runs a :class:`SinkForwarder` on its own event loop in a daemon thread.

    For the control plane (a threaded server without a loop of its own)::

        forwarding = SinkThread(store)
        forwarding.update(mesh.spec.audit.sinks)   # at start and whenever the Mesh changes
        ...
        forwarding.close()
    """

    def __init__(self, store: AuditStore, poll_interval: float = 0.5) -> None:
        self.store = store
        self.poll_interval = poll_interval
        self.forwarder: SinkForwarder | None = None
        self._configured: list[AuditSink] = []
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def update(self, sinks: list[AuditSink]) -> None:
        """(Re)start forwarding to ``sinks``; a no-op when they did not change."""
        if list(sinks) == self._configured and (self._thread is not None or not sinks):
            return
        self.close()
        self._configured = list(sinks)
        if not sinks:
            return
        forwarder = SinkForwarder(self.store, sinks, poll_interval=self.poll_interval)
        loop = asyncio.new_event_loop()
        self.forwarder, self._loop = forwarder, loop

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(forwarder.run())
            finally:
                loop.close()

        self._thread = threading.Thread(target=run, name="meshward-audit-sinks", daemon=True)
        self._thread.start()

    def close(self) -> None:
        if self._thread is not None and self._loop is not None and self.forwarder is not None:
            self._loop.call_soon_threadsafe(self.forwarder.stop)
            self._thread.join(timeout=10)
        self._thread = self._loop = self.forwarder = None
        self._configured = []
