"""Running ingress gateways: one process per ``Gateway`` resource, for ``up`` and ``gateway``.

A gateway is the sidecar program in gateway mode (``meshward proxy --control URL --gateway``)
with the identity ``<namespace>/<name>``: a join token, its own key and SVID, its config from
the control plane. It registers no inbound endpoint (outside callers find it by its address,
shown in ``meshward status``), and is restarted with back-off like a sidecar when it exits.
"""

from __future__ import annotations

import datetime as dt
import os
import threading
import time
from pathlib import Path

from meshward.identity.issuance import IdentityService
from meshward.mesh.processes import Child, restart_delay, start_child, stop_groups
from meshward.mesh.records import GatewayRecord
from meshward.mesh.workload import MeshError, sidecar_command, tail, wait_ready_file

__all__ = ["GatewayProcess"]


class GatewayProcess:
    """One gateway process: start, wait for ready, restart when it exits, stop."""

    def __init__(
        self,
        identity: IdentityService,
        state_dir: Path,
        bundle: Path,
        control_url: str,
        record: GatewayRecord,
        tls: bool,
    ) -> None:
        self.identity, self.bundle, self.control_url, self.record = identity, bundle, control_url, record
        self.tls = tls
        self.directory = state_dir / "gateways" / f"{record.namespace}.{record.name}"
        self.child: Child | None = None
        self.failures = 0
        self.next_start = 0.0
        self.listeners = {"inbound": "127.0.0.1:0", "outbound": "127.0.0.1:0", "admin": "127.0.0.1:0"}

    def start(self, stopping: threading.Event) -> None:
        rec = self.record
        token = self.identity.create_token(rec.ref, dt.timedelta(minutes=10))
        ready_file = self.directory / "ready.json"
        ready_file.unlink(missing_ok=True)
        args = sidecar_command(
            control_url=self.control_url,
            bundle=self.bundle,
            identity=rec.ref,
            workload=rec.ref,
            sidecar_id=f"gateway:{rec.ref}",
            directory=self.directory,
            app=None,
            listeners={k: v for k, v in self.listeners.items() if k != "inbound"},
            parent_pid=os.getpid(),
        )
        args.append("--gateway")
        env = dict(os.environ, MESHWARD_TOKEN=token, PYTHONUNBUFFERED="1")
        child = self.child = start_child(f"gateway {rec.ref}", args, self.directory / "gateway.log", env)
        rec.pid = child.pid
        info = wait_ready_file(child, ready_file, f"gateway {rec.ref}", stopping)
        rec.address = str(info.get("inbound") or "")
        rec.admin = str(info.get("admin") or "") or None
        rec.scheme = "https" if self.tls else "http"
        rec.ready, rec.state, rec.message = True, "ready", ""
        for name in ("outbound", "admin"):
            if info.get(name):
                self.listeners[name] = str(info[name])

    def check(self, stopping: threading.Event) -> bool:
        """Restart an exited gateway (with back-off); True if the record changed."""
        child = self.child
        if child is None or (code := child.exit_code()) is None:
            return False
        rec = self.record
        now = time.monotonic()
        if not self.next_start:
            rec.ready, rec.state = False, "restarting"
            rec.message = f"exited ({code}): {tail(child.log)}"
            self.next_start = now + restart_delay(self.failures)
            self.failures += 1
            return True
        if now < self.next_start:
            return False
        self.next_start = 0.0
        rec.restarts += 1
        try:
            self.start(stopping)
        except MeshError as exc:
            rec.state, rec.message = "failed", str(exc)
        return True

    def stop(self) -> None:
        child = self.child
        if child is not None:
            stop_groups([child.pid], 5.0, [child.popen])
        self.record.ready, self.record.state = False, "stopped"
