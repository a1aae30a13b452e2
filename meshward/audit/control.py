"""The control plane's side of the audit trail, in one object it can hold.

:class:`ControlAudit` is the store sidecars ship to (``ingest``, what ``POST /v1/audit``
calls), the recorder of the control plane's own security events (each an OCSF record in the
control plane's own chain), and the owner of the SIEM forwarding thread::

    audit = ControlAudit(state.path)                  # instead of AuditStore(state.path)
    audit.started(control_identity)
    audit.update_sinks(resources)                     # at start and after every apply/rollback
    audit.certificate_issued(spiffe_id, serial, not_after, via="join-token", src_ip=ip)
    audit.certificate_refused(reason, identity=None, src_ip=ip)
    audit.config_applied(generation, who, changes=3) / audit.config_rolled_back(...)
    audit.stopped(control_identity); audit.close()

Every method is thread-safe (the control plane serves a thread per connection) and never
raises into the caller for an audit failure of its own; it logs instead.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from meshward.audit.ocsf import api_activity, application_lifecycle
from meshward.audit.sinks import SinkThread
from meshward.audit.store import AuditStore, IngestAck
from meshward.resources.mesh import AuditSink

__all__ = ["ControlAudit"]

log = logging.getLogger("meshward.audit")


def _ms() -> int:
    return int(time.time() * 1000)


class ControlAudit:
    def __init__(self, state_dir: Path, checkpoint_interval: float = 0.0) -> None:
        self.store = AuditStore(state_dir, checkpoint_interval)
        self.sinks = SinkThread(self.store)

    # -- what sidecars send ----------------------------------------------------------------------
    def ingest(self, source: str, batch: bytes) -> IngestAck:
        return self.store.ingest(source, batch)

    # -- the control plane's own events ------------------------------------------------------------
    def _record(self, event: dict[str, Any]) -> None:
        try:
            self.store.record(event)
        except OSError as exc:
            log.error("audit: could not record a control-plane event: %s", exc)

    def started(self, identity: str) -> None:
        self._record(application_lifecycle("meshward-control", identity, started=True, time_ms=_ms()))

    def stopped(self, identity: str) -> None:
        self._record(application_lifecycle("meshward-control", identity, started=False, time_ms=_ms()))

    def certificate_issued(
        self, identity: str, serial: str, not_after: dt.datetime, via: str, src_ip: str | None = None
    ) -> None:
        self._record(
            api_activity(
                "IssueCertificate",
                activity="create",
                actor=identity,
                time_ms=_ms(),
                success=True,
                resource={
                    "type": "X.509-SVID",
                    "uid": serial,
                    "name": identity,
                    "data": {"not_after": not_after.isoformat(), "via": via},
                },
                message=f"issued an SVID for {identity} ({via})",
                src_ip=src_ip,
            )
        )

    def certificate_refused(
        self, reason: str, identity: str | None = None, src_ip: str | None = None
    ) -> None:
        self._record(
            api_activity(
                "IssueCertificate",
                activity="create",
                actor=identity or "",
                time_ms=_ms(),
                success=False,
                resource={"type": "X.509-SVID", "name": identity or ""},
                message=f"refused an SVID: {reason}",
                src_ip=src_ip,
            )
        )

    def config_applied(self, generation: int, who: str, changes: int | None = None) -> None:
        counted = f" ({changes} changes)" if changes is not None else ""
        self._config_changed("ApplyConfig", generation, who, f"generation {generation} applied{counted}")

    def config_rolled_back(self, generation: int, to_generation: int, who: str) -> None:
        message = f"generation {generation} restores generation {to_generation}"
        self._config_changed("RollbackConfig", generation, who, message)

    def config_deleted(self, generation: int, who: str, resources: list[str]) -> None:
        message = f"generation {generation} deletes {', '.join(resources)}"
        self._config_changed("DeleteConfig", generation, who, message)

    def _config_changed(self, operation: str, generation: int, who: str, message: str) -> None:
        """``who`` made ``generation`` the live config (by ``operation``)."""
        self._record(
            api_activity(
                operation,
                activity="update",
                actor=who,
                time_ms=_ms(),
                success=True,
                resource={"type": "ConfigGeneration", "uid": str(generation)},
                message=message,
            )
        )

    # -- SIEM forwarding -------------------------------------------------------------------------
    def update_sinks(self, resources: Iterable[Any]) -> None:
        """Forward to the sinks of the ``Mesh`` resource among ``resources`` (none: stop)."""
        sinks: list[AuditSink] = []
        for resource in resources:
            if getattr(resource, "kind", None) == "Mesh":
                sinks = list(resource.spec.audit.sinks)
        try:
            self.sinks.update(sinks)
        except Exception as exc:  # a bad sink (e.g. unreadable caFile) must not stop the plane
            log.error("audit: cannot start the SIEM sinks: %s", exc)

    def close(self) -> None:
        self.sinks.close()
        self.store.checkpoint()
        self.store.close()
