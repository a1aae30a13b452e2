"""``meshward up`` follows the config: Workloads added, changed or removed by a later ``apply``
(or ``rollback``) are started, restarted or stopped by the running mesh.

:class:`Reconciler` is polled by the supervisor's loop. About twice a second it reads the config
store's generation (a SQLite read, no network); when it moved, it diffs the ``Workload``
resources of the new generation against those of the last one it saw:

- added → a new :class:`~meshward.mesh.workload.WorkloadRunner` is started in a thread (its
  sidecar, then its app, then readiness) and joins the supervised runners once it is up;
- removed → its app, then its sidecar are stopped (the sidecar unregisters its endpoint, so
  callers stop routing to it at the next snapshot);
- changed (spec or labels) → once its old sidecar has answered the generation (it NACKs a
  generation that changes its own Workload, which ``apply --wait`` reports in resource terms;
  at most :data:`ANSWER_WAIT` seconds), stopped, then started again from the new resource.

Only Workloads that changed after ``up`` started are touched: resources stored by earlier runs
that this mesh file does not name are left alone. Pure diffing lives in :func:`diff_workloads`.
"""

from __future__ import annotations

import threading
import time
from typing import Protocol

from meshward.config.store import ConfigStore, canonical
from meshward.identity.spiffe import SpiffeId
from meshward.mesh.processes import stop_groups
from meshward.mesh.records import RunRecord, WorkloadRecord
from meshward.mesh.workload import MeshContext, MeshError, WorkloadRunner
from meshward.resources.mesh import Workload

__all__ = ["POLL_SECONDS", "Reconciler", "RunningMesh", "diff_workloads"]

POLL_SECONDS = 0.5
ANSWER_WAIT = 3.0  # at most this long for a changed Workload's sidecar to answer before a restart
Key = tuple[str, str]


class RunningMesh(MeshContext, Protocol):
    """What the reconciler changes in the running mesh (the supervisor): its record and runners."""

    record: RunRecord
    runners: list[WorkloadRunner]


def _workloads(store: ConfigStore) -> dict[Key, Workload]:
    return {(r.metadata.namespace, r.metadata.name): r for r in store.resources() if isinstance(r, Workload)}


def diff_workloads(old: dict[Key, str], new: dict[Key, str]) -> tuple[list[Key], list[Key], list[Key]]:
    """(added, removed, changed) keys between two ``key → canonical document`` maps."""
    added = sorted(k for k in new if k not in old)
    removed = sorted(k for k in old if k not in new)
    changed = sorted(k for k in new if k in old and new[k] != old[k])
    return added, removed, changed


class Reconciler:
    def __init__(self, mesh: RunningMesh) -> None:
        self.mesh = mesh
        self.store = ConfigStore(mesh.state.db_path, mesh.state.trust_domain)
        self.generation = self.store.generation()
        self.seen = {k: canonical(w) for k, w in _workloads(self.store).items()}
        self.starting: dict[Key, WorkloadRunner] = {}
        # Changed Workloads wait for their old sidecar's answer (a NACK: the generation changes
        # its own Workload) before the restart, so `apply --wait` and `status` can show it.
        self.deferred: dict[Key, float] = {}
        self._lock = threading.Lock()
        self._next = 0.0

    def check(self) -> None:
        now = time.monotonic()
        self._restart_answered(now)
        if now < self._next:
            return
        self._next = now + POLL_SECONDS
        generation = self.store.generation()
        if generation == self.generation:
            return
        desired = _workloads(self.store)
        docs = {k: canonical(w) for k, w in desired.items()}
        added, removed, changed = diff_workloads(self.seen, docs)
        self.generation, self.seen = generation, docs
        for key in removed:
            self.stop(key, "removed")
        for key in added:
            self.start(desired[key])
        for key in changed:
            self.deferred[key] = now + ANSWER_WAIT
        self._restart_answered(now)

    def _restart_answered(self, now: float) -> None:
        """Restart each deferred Workload once its sidecar answered the generation (or it waited
        ANSWER_WAIT seconds: a sidecar that is down answers nothing)."""
        if not self.deferred:
            return
        acks = self.store.acks()
        for key, deadline in list(self.deferred.items()):
            ack = acks.get(f"{key[0]}/{key[1]}")
            if now < deadline and (ack is None or ack.generation < self.generation):
                continue
            del self.deferred[key]
            workload = _workloads(self.store).get(key)
            self.stop(key, "changed")
            if workload is not None:
                self.start(workload)

    def _runner(self, key: Key) -> WorkloadRunner | None:
        for r in self.mesh.runners:
            if (r.record.namespace, r.record.name) == key:
                return r
        return None

    def stop(self, key: Key, why: str) -> None:
        mesh = self.mesh
        runner = self._runner(key)
        if runner is None:
            return
        mesh.runners.remove(runner)
        apps = [c for c in (runner.app,) if c is not None]
        stop_groups([c.pid for c in apps], 5.0, [c.popen for c in apps])
        sidecars = [c for c in (runner.sidecar,) if c is not None]
        stop_groups([c.pid for c in sidecars], 5.0, [c.popen for c in sidecars])
        if runner.record in mesh.record.workloads:
            mesh.record.workloads.remove(runner.record)
        mesh.save()
        mesh.log(f"{key[0]}/{key[1]}: stopped ({why} in generation {self.generation})")

    def start(self, workload: Workload) -> None:
        mesh = self.mesh
        ns = workload.metadata.namespace
        key = (ns, workload.metadata.name)
        td = mesh.state.trust_domain
        rec = WorkloadRecord(
            workload.metadata.name, ns, workload.service, SpiffeId(td, ns, workload.service_account).uri
        )
        runner = WorkloadRunner(mesh, workload, rec)
        mesh.record.workloads.append(rec)
        self.starting[key] = runner
        mesh.save()

        def run() -> None:
            try:
                runner.start()
            except MeshError as exc:
                mesh.log(f"{rec.ref}: could not start: {exc}")
            finally:
                self.starting.pop(key, None)
            if mesh.stopping.is_set():
                for child in runner.children():
                    child.stop(1.0)
                return
            mesh.runners.append(runner)  # supervised (restarted) from now on
            rec.ready, rec.state = runner.app is not None or not workload.spec.command, "ready"
            mesh.save()
            mesh.log(f"{rec.ref}: started (added in generation {self.generation})")

        threading.Thread(target=run, name=f"start-{rec.ref}", daemon=True).start()

    def pending(self) -> list[WorkloadRunner]:
        return list(self.starting.values())
