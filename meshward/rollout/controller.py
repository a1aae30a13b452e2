"""The control plane's rollout loop: analysis every interval, weights as config generations.

:class:`RolloutController` runs in one thread of the control plane. Every ``TICK`` seconds it

1. reads new audit records (:class:`~meshward.rollout.facts.AuditFacts`);
2. for each ``ModelRoute`` with a ``rollout``: starts its rollout when the route is new or its
   spec changed; analyses the last interval when one has passed (:func:`analysis.tick`);
3. writes each transition as a new config generation (the route's
   ``rollout.meshward.dev/weight`` annotation; the sidecars get it through their watch) and an
   audit record with the reason, and keeps the stored route's weight equal to the rollout's
   (a re-applied file without the annotation gets it back);
4. persists every status (:class:`~meshward.rollout.state.RolloutStore`).

Operators act through :meth:`RolloutController.command` (``meshward rollout promote|pause|
resume|abort``), applied the same way.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any

from meshward.audit.ocsf import api_activity
from meshward.identity.spiffe import SpiffeId
from meshward.resources.mesh import Workload
from meshward.resources.modelroute import WEIGHT_ANNOTATION, ModelRoute
from meshward.rollout import analysis
from meshward.rollout.analysis import RolloutStatus, Transition
from meshward.rollout.facts import AuditFacts
from meshward.rollout.selection import subset_of
from meshward.rollout.state import RolloutStore

if TYPE_CHECKING:
    from meshward.control.service import ControlService

__all__ = ["ACTOR", "TICK", "RolloutController", "find_route"]

log = logging.getLogger("meshward.rollout")

TICK = 0.1  # how often intervals are checked for being due (and audit records read)
ACTOR = "meshward-control/rollout"


def find_route(routes: list[ModelRoute], service: str) -> ModelRoute:
    """The route of ``service`` (``NAME`` or ``NAMESPACE/NAME``); LookupError names the problem."""
    ns, _, name = service.rpartition("/")
    found = [r for r in routes if r.spec.service == name and (not ns or r.metadata.namespace == ns)]
    if not found:
        raise LookupError(f"no ModelRoute for service {service!r}")
    if len(found) > 1:
        spaces = ", ".join(sorted(r.metadata.namespace for r in found))
        raise LookupError(
            f"service {name!r} has ModelRoutes in several namespaces ({spaces}): say NAMESPACE/{name}"
        )
    return found[0]


class RolloutController:
    def __init__(self, service: ControlService) -> None:
        self.service = service
        self.store = RolloutStore(service.state.path / "rollouts.db")
        self.facts = AuditFacts(service.audit.store)
        self.statuses: dict[str, RolloutStatus] = self.store.load()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="control-rollouts", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.wait(TICK):
            try:
                self.tick(time.time())
            except Exception:
                log.exception("rollout controller tick failed")

    # -- the loop --------------------------------------------------------------------------------
    def routes(self) -> list[ModelRoute]:
        return [r for r in self.service.current_resources() if isinstance(r, ModelRoute)]

    def tick(self, now: float) -> None:
        self.facts.poll()
        with self._lock:
            for route in self.routes():
                rollout = route.spec.rollout
                if rollout is None:
                    continue
                key = f"{route.metadata.namespace}/{route.metadata.name}"
                status = self.statuses.get(key)
                if status is None or status.digest != analysis.spec_digest(route):
                    status, t = analysis.begin(route, now)
                    self.statuses[key] = status
                    self._publish(route, status, t, now)
                    continue
                if status.state == "progressing" and now - status.last_eval >= rollout.interval_seconds:
                    canary, stable = self._identities(route)
                    window = self.facts.window(key, status.last_eval, now, canary, stable)
                    t2 = analysis.tick(status, rollout, window, now)
                    if t2 is not None:
                        self._publish(route, status, t2, now)
                    else:
                        self.store.save(status)
                elif route.canary_weight != status.weight:
                    self._publish(route, status, None, now)  # the stored route lost its weight

    def _identities(self, route: ModelRoute) -> tuple[frozenset[str], frozenset[str]]:
        """SPIFFE IDs of the Workloads in the canary and stable subsets of the route's service."""
        td = self.service.trust_domain
        found: dict[str, set[str]] = {"canary": set(), "stable": set()}
        for r in self.service.current_resources():
            if not isinstance(r, Workload) or r.metadata.namespace != route.metadata.namespace:
                continue
            if r.service != route.spec.service:
                continue
            subset = subset_of(r.metadata.labels, route.spec.subsets)
            if subset in found:
                found[subset].add(SpiffeId(td, r.metadata.namespace, r.service_account).uri)
        return frozenset(found["canary"]), frozenset(found["stable"])

    def _publish(self, route: ModelRoute, status: RolloutStatus, t: Transition | None, now: float) -> None:
        """The status's weight as a new generation (if it changed), an audit record, persisted."""
        generation: int | None = None
        if route.canary_weight != status.weight or WEIGHT_ANNOTATION not in route.metadata.annotations:
            annotations = {**route.metadata.annotations, WEIGHT_ANNOTATION: str(status.weight)}
            updated = route.model_copy(
                update={"metadata": route.metadata.model_copy(update={"annotations": annotations})}
            )
            reason = t.reason if t is not None else f"restore canary weight {status.weight}"
            generation = self.service.apply_resources([updated], f"{ACTOR} ({reason})")
        if t is not None:
            status.record(t, now, generation)
            self.service.record_event(_audit_event(status, t, generation))
            log.info("rollout %s: %s (%s)", status.route, t.event, t.reason)
        self.store.save(status)

    # -- operator API ----------------------------------------------------------------------------
    def status(self, service: str) -> dict[str, Any]:
        route = find_route(self.routes(), service)
        with self._lock:
            status = self.statuses.get(f"{route.metadata.namespace}/{route.metadata.name}")
            return _status_json(route, status)

    def command(self, service: str, action: str, who: str) -> dict[str, Any]:
        route = find_route(self.routes(), service)
        key = f"{route.metadata.namespace}/{route.metadata.name}"
        now = time.time()
        with self._lock:
            status = self.statuses.get(key)
            if status is None:
                raise LookupError(f"ModelRoute {key} has no rollout in progress")
            t = analysis.command(status, action, now, who)
            self._publish(route, status, t, now)
            return _status_json(route, status)


def _status_json(route: ModelRoute, status: RolloutStatus | None) -> dict[str, Any]:
    rollout = route.spec.rollout
    doc: dict[str, Any] = {
        "route": f"{route.metadata.namespace}/{route.metadata.name}",
        "service": route.spec.service,
        "namespace": route.metadata.namespace,
        "steps": list(rollout.steps) if rollout else [],
        "interval": rollout.interval if rollout else None,
        "threshold": rollout.threshold if rollout else None,
    }
    if status is None:
        doc.update(state="none" if rollout is None else "pending", step=0, weight=route.canary_weight)
        doc.update(checks=[], reason="", failed=0, history=[])
        return doc
    doc.update(
        state=status.state,
        step=status.step,
        weight=status.weight,
        checks=status.checks,
        reason=status.reason,
        failed=status.failed,
        history=status.history,
    )
    return doc


def _audit_event(status: RolloutStatus, t: Transition, generation: int | None) -> dict[str, Any]:
    operation = {
        "started": "RolloutStart",
        "step": "RolloutStep",
        "promoted": "RolloutPromote",
        "rolledBack": "RolloutRollback",
        "paused": "RolloutPause",
        "resumed": "RolloutResume",
        "checkFailed": "RolloutCheckFailed",
    }.get(t.event, "Rollout")
    return api_activity(
        operation,
        activity="update",
        actor=ACTOR,
        time_ms=int(time.time() * 1000),
        success=t.event not in ("rolledBack", "checkFailed"),
        resource={
            "type": "ModelRoute",
            "uid": status.route,
            "name": status.service,
            "data": {"weight": t.weight, "step": status.step, "generation": generation},
        },
        message=t.reason,
    )
