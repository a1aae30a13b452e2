"""The sidecar process's telemetry pipeline: audit spool and shipper, access log, span exporter.

The telemetry filter (:mod:`meshward.telemetry.filter`) records each request into the process's
:class:`~meshward.telemetry.outputs.TelemetryOutputs`; this pipeline owns what stands behind
them, for as long as the process serves. The :class:`~meshward.proxy.sidecar.Sidecar` makes it
with its first config generation and closes it when it stops:

- **the audit spool**: ``<state_dir>/audit/spool-<n>``, the first slot this process can lock, so
  several worker processes sharing a state directory each keep their own chain, and a
  restarted worker takes over (and resumes shipping) its predecessor's slot. A start record is
  written when it opens, a stop record when it closes (at :meth:`stop`, or at exit);
- **its shipper** to the control plane, started once by :meth:`ship` with the poster of the
  process that talks to the control plane (``Sidecar.ship_audit``);
- **per generation** (:meth:`configure`): the access log and OTLP span exporter the ``Mesh``
  asks for, and an ``ApplyConfigGeneration`` audit record;
- **the Prometheus collector** of the telemetry metrics, with the certificate-expiry and
  audit-backlog gauges and the authz decision counters.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import datetime as dt
import fcntl
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from meshward.audit.ocsf import api_activity, application_lifecycle
from meshward.audit.shipper import AuditPost, AuditShipper
from meshward.audit.spool import AuditSpool
from meshward.config.snapshot import MeshSnapshot
from meshward.filters.authz import counters
from meshward.filters.base import SidecarRuntime
from meshward.telemetry.accesslog import AccessLog
from meshward.telemetry.metrics import TelemetryCollector
from meshward.telemetry.outputs import telemetry_outputs
from meshward.telemetry.tracing import SpanExporter

__all__ = ["MAX_SPOOL_SLOTS", "TelemetryPipeline"]

log = logging.getLogger("meshward.telemetry")

MAX_SPOOL_SLOTS = 64
_STOP_WAIT = 1.0  # seconds a stopping shipper may take to finish the batch it is sending


def _open_spool(state_dir: Path) -> tuple[AuditSpool, int] | None:
    """Lock the first free ``spool-<n>`` slot; None if every slot is taken."""
    base = state_dir / "audit"
    base.mkdir(parents=True, exist_ok=True, mode=0o700)
    for n in range(MAX_SPOOL_SLOTS):
        fd = os.open(base / f"spool-{n}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        return AuditSpool(base / f"spool-{n}"), fd
    return None


def _now_ms() -> int:
    return int(time.time() * 1000)


class TelemetryPipeline:
    """One per sidecar process; see the module docstring."""

    def __init__(
        self, runtime: SidecarRuntime, not_after: Callable[[], dt.datetime | None] = lambda: None
    ) -> None:
        """``not_after``: the current SVID's notAfter (the certificate expiry gauge)."""
        self.runtime = runtime
        self.outputs = telemetry_outputs(runtime)
        self._not_after = not_after
        self.access_log_mode = "off"
        self.exporter_endpoint: str | None = None
        self.spool: AuditSpool | None = None
        self.shipper: AuditShipper | None = None
        self._shipper_task: asyncio.Task[None] | None = None
        self._spool_lock = -1
        self._collector: TelemetryCollector | None = None
        if runtime.state_dir is None:
            log.warning("audit: the sidecar has no state directory; audit records are not kept")
        else:
            self._open_trail(Path(runtime.state_dir))
        if runtime.metrics_registry is not None:
            self._collector = TelemetryCollector(
                self.outputs.metrics, self._gauges, lambda: counters(runtime)
            )
            runtime.metrics_registry.register(self._collector)

    def _open_trail(self, state_dir: Path) -> None:
        opened = _open_spool(state_dir)
        if opened is None:
            log.error("audit: all %d spool slots are locked; audit records are NOT kept", MAX_SPOOL_SLOTS)
            return
        self.spool, self._spool_lock = opened
        if self.spool.recovered_bytes:
            log.warning("audit: cut a torn record (%d bytes) from the spool", self.spool.recovered_bytes)
        self.outputs.audit_sink = self.audit
        self.audit(
            application_lifecycle("meshward-sidecar", self.outputs.reporter, started=True, time_ms=_now_ms())
        )
        atexit.register(self.close)

    # -- configuration (per generation) ----------------------------------------------------------
    def configure(self, snapshot: MeshSnapshot) -> None:
        """Open what generation ``snapshot`` asks for (called once it is in force)."""
        outputs = self.outputs
        settings = snapshot.mesh.telemetry
        mode = settings.access_log
        state_dir = self.runtime.state_dir
        if mode == "state" and state_dir is None:
            mode = "stdout"
        if mode != self.access_log_mode:
            old, outputs.access_log = outputs.access_log, None
            if old is not None:
                old.close()
            if mode != "off":
                path = Path(state_dir) / "access.log" if mode == "state" and state_dir is not None else None
                outputs.access_log = AccessLog(path, on_drop=self._dropped)
            self.access_log_mode = mode
        endpoint = settings.otlp_endpoint or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        if endpoint != self.exporter_endpoint:
            if outputs.exporter is not None:
                outputs.exporter.shutdown()
            w = self.runtime.workload
            outputs.exporter = (
                SpanExporter(
                    endpoint,
                    w.service,
                    {"service.namespace": w.namespace, "meshward.identity": outputs.reporter},
                )
                if endpoint
                else None
            )
            self.exporter_endpoint = endpoint
        self.audit(
            api_activity(
                "ApplyConfigGeneration",
                activity="update",
                actor=outputs.reporter,
                time_ms=_now_ms(),
                success=True,
                resource={"type": "MeshSnapshot", "uid": str(snapshot.generation)},
                message=f"config generation {snapshot.generation} applied",
            )
        )

    # -- audit -----------------------------------------------------------------------------------
    def audit(self, event: dict[str, Any]) -> None:
        """Append one record to the spool and wake the shipper (the outputs' ``audit_sink``)."""
        spool = self.spool
        if spool is None:
            return
        try:
            spool.append(event)
        except OSError as exc:  # disk full: never take the data plane down for it, but say so
            log.error("audit: could not write to the spool: %s", exc)
            return
        self.outputs.metrics.audit_records += 1
        if self.shipper is not None:
            self.shipper.notify()

    def ship(self, post: AuditPost, **options: Any) -> AuditShipper | None:
        """Ship the spool with ``post`` from now on (on the running loop; once per process).

        None when this process keeps no spool. ``options`` tune the :class:`AuditShipper`.
        """
        if self.spool is None:
            return None
        if self.shipper is None:
            loop = asyncio.get_running_loop()
            self.shipper = AuditShipper(self.spool, post, **options)
            self._shipper_task = loop.create_task(self.shipper.run())
        return self.shipper

    # -- observability ---------------------------------------------------------------------------
    def _dropped(self, n: int) -> None:
        self.outputs.metrics.access_log_dropped += n

    def _gauges(self) -> dict[str, float | None]:
        not_after = self._not_after()
        return {
            "certificate_expiration": not_after.timestamp() if not_after is not None else None,
            "audit_pending": float(self.spool.pending) if self.spool is not None else None,
        }

    # -- lifecycle -------------------------------------------------------------------------------
    async def stop(self) -> None:
        """Stop the shipper (letting a batch in flight finish, briefly), then :meth:`close`."""
        task, self._shipper_task = self._shipper_task, None
        if self.shipper is not None:
            self.shipper.stop()
        if task is not None:
            await asyncio.wait({task}, timeout=_STOP_WAIT)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self.close()

    def close(self) -> None:
        """Write the stop record and release everything (idempotent; also run at exit)."""
        outputs = self.outputs
        if self.spool is not None:
            self.audit(
                application_lifecycle("meshward-sidecar", outputs.reporter, started=False, time_ms=_now_ms())
            )
            outputs.audit_sink = None
            self.spool.close()
            self.spool = None
        if outputs.access_log is not None:
            outputs.access_log.close()
            outputs.access_log = None
        self.access_log_mode = "off"
        if outputs.exporter is not None:
            outputs.exporter.shutdown()
            outputs.exporter = None
        self.exporter_endpoint = None
        if self._spool_lock >= 0:
            os.close(self._spool_lock)
            self._spool_lock = -1
        registry = self.runtime.metrics_registry
        if self._collector is not None and registry is not None:
            registry.unregister(self._collector)
            self._collector = None
        atexit.unregister(self.close)
