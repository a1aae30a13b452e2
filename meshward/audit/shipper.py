"""Ships a sidecar's audit spool to the control plane in batches, resuming where it left off.

The transport is the caller's (:data:`AuditPost`; the sidecar's is
:func:`meshward.control.client.audit_poster`): ``post(body) -> (http_status, response_body)``
sends one NDJSON batch (``Content-Type: application/x-ndjson``) over the sidecar's mTLS client to
the control plane's audit endpoint, which answers with :meth:`meshward.audit.store.IngestAck.to_json`
(200) or :meth:`~meshward.audit.store.AuditRejected.to_json` (4xx). The shipper

- reads from the last acknowledged sequence number (persisted in the spool, so a restarted
  sidecar resumes there and a lost ack only causes a harmless resend);
- on a 409 with ``expected_seq`` resumes from there (the control plane is behind or ahead);
- on any error or a dead control plane retries with exponential backoff and jitter, while
  the sidecar keeps serving: the spool simply grows on disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from meshward.audit.spool import AuditSpool
from meshward.retry import Backoff

__all__ = ["AuditPost", "AuditShipper", "ShipperStats"]

log = logging.getLogger(__name__)

AuditPost = Callable[[bytes], Awaitable[tuple[int, bytes]]]


@dataclass(slots=True)
class ShipperStats:
    batches: int = 0
    records: int = 0
    failures: int = 0
    last_error: str | None = None


class AuditShipper:
    """One per sidecar: ``await shipper.run()`` as a background task; ``notify()`` after appends."""

    def __init__(
        self,
        spool: AuditSpool,
        post: AuditPost,
        *,
        batch_records: int = 500,
        batch_bytes: int = 1 << 20,
        interval: float = 1.0,
        min_backoff: float = 0.2,
        max_backoff: float = 30.0,
    ) -> None:
        self.spool = spool
        self.post = post
        self.batch_records = batch_records
        self.batch_bytes = batch_bytes
        self.interval = interval
        self.min_backoff = min_backoff
        self.max_backoff = max_backoff
        self.stats = ShipperStats()
        self._cursor = spool.acked
        self._wake = asyncio.Event()
        self._stopping = False

    def notify(self) -> None:
        """New records were appended: ship soon (cheap; safe to call per record)."""
        self._wake.set()

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()

    async def run(self) -> None:
        delay = Backoff(self.min_backoff, self.max_backoff, "spread")
        while not self._stopping:
            try:
                progressed = await self.ship_once()
            except Exception as exc:  # transport failure: the control plane is away
                self.stats.failures += 1
                self.stats.last_error = f"{type(exc).__name__}: {exc}"
                log.warning(
                    "audit: shipping failed (%s); retrying in %.1fs", self.stats.last_error, delay.peek()
                )
                await self._sleep(delay.next())
                continue
            delay.reset()
            if not progressed:
                await self._sleep(self.interval)

    async def _sleep(self, seconds: float) -> None:
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)

    async def ship_once(self) -> bool:
        """Send one batch; True if records were acknowledged. Raises on transport failure."""
        batch = self.spool.read(self._cursor, self.batch_records, self.batch_bytes)
        if batch is None:
            return False
        await asyncio.get_running_loop().run_in_executor(None, self.spool.sync)
        status, body = await self.post(batch.body())
        try:
            answer = json.loads(body) if body else {}
        except ValueError:
            answer = {}
        if status == 200 and isinstance(answer.get("acked_seq"), int):
            acked = min(int(answer["acked_seq"]), batch.last_seq)
            await self._ack(acked)
            progressed = acked > self._cursor
            self._cursor = max(self._cursor, acked)
            self.stats.batches += 1
            self.stats.records += max(0, acked - batch.first_seq + 1)
            return progressed
        expected = answer.get("expected_seq") if isinstance(answer, dict) else None
        if status == 409 and isinstance(expected, int) and expected >= 1:
            log.warning("audit: control plane expects seq %d (we sent from %d)", expected, batch.first_seq)
            if expected < self.spool.first_available:
                # The control plane lost records it had acknowledged (its store was restored
                # from an older copy): they are gone here too. Say so; keep retrying slowly.
                raise RuntimeError(
                    f"control plane expects seq {expected} of chain {self.spool.chain}, acknowledged "
                    f"and deleted here (oldest kept: {self.spool.first_available}); operator action needed"
                )
            if expected - 1 > self._cursor:
                await self._ack(expected - 1)
            cursor = min(expected - 1, self.spool.last_seq)
            if cursor == self._cursor and expected == batch.first_seq:
                raise RuntimeError(f"control plane refused seq {expected}: {answer.get('error')}")
            self._cursor = cursor
            return True
        detail = answer.get("error") if isinstance(answer, dict) else None
        raise RuntimeError(f"control plane answered {status}: {detail or body[:200]!r}")

    async def _ack(self, seq: int) -> None:
        """Persist the ack off the loop (an fsync and segment deletions; safe beside ``append``)."""
        await asyncio.get_running_loop().run_in_executor(None, self.spool.ack, seq)

    async def flush(self, timeout: float) -> bool:
        """Ship until nothing is pending or ``timeout`` passes (used at shutdown)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.spool.pending > 0 and loop.time() < deadline:
            try:
                if not await asyncio.wait_for(self.ship_once(), max(0.01, deadline - loop.time())):
                    break
            except Exception:
                return False
        return self.spool.pending == 0
