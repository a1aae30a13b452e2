"""Pure: the rollout state machine (Flagger-style automated canary analysis).

One :class:`RolloutStatus` per ``ModelRoute`` with a ``rollout``. The control plane calls
:func:`begin` when a route (or a changed spec) appears, then :func:`tick` once per ``interval``
with that interval's :class:`~meshward.rollout.checks.Window`:

- a check that fails counts one failure; at ``threshold`` failures the rollout is
  **rolledBack** (canary weight 0) with the failing check as its reason;
- an interval where every check passes (or has no data) and the canary served at least
  ``minRequests`` moves to the next step's weight; after the last step it is **promoted**
  (canary weight 100); an interval with fewer requests is not closed: its window grows until
  it has them (so a report arriving late is analysed as soon as it arrives);
- an operator may ``pause`` (no analysis, weights hold), ``resume``, ``promote`` or ``abort``.

Every change of weight or state is a :class:`Transition`: the caller writes it as a config
generation and an audit record. The status keeps a bounded ``history`` of them.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any

from meshward.resources.modelroute import ModelRoute, Rollout
from meshward.rollout.checks import CheckResult, Window, evaluate

__all__ = [
    "STATES",
    "RolloutStatus",
    "Transition",
    "begin",
    "command",
    "spec_digest",
    "tick",
]

STATES = ("progressing", "paused", "promoted", "rolledBack")
_HISTORY = 200


@dataclass(frozen=True, slots=True)
class Transition:
    event: str  # started | step | promoted | rolledBack | paused | resumed | checkFailed
    weight: int
    reason: str


@dataclass(slots=True)
class RolloutStatus:
    route: str  # "namespace/name" of the ModelRoute
    service: str
    digest: str  # of the route's spec: a changed spec starts a new rollout
    state: str = "progressing"
    step: int = 0  # 1-based index of the current step (0 before the first)
    weight: int = 0
    failed: int = 0
    reason: str = ""
    checks: list[dict[str, Any]] = field(default_factory=list)
    started: float = 0.0
    last_eval: float = 0.0
    history: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RolloutStatus:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)

    def record(self, t: Transition, now: float, generation: int | None = None) -> None:
        entry: dict[str, Any] = {"time": now, "event": t.event, "step": self.step, "weight": t.weight}
        if t.reason:
            entry["reason"] = t.reason
        if generation is not None:
            entry["generation"] = generation
        self.history.append(entry)
        del self.history[:-_HISTORY]


def spec_digest(route: ModelRoute) -> str:
    doc = route.spec.model_dump(by_alias=True, mode="json")
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16]


def begin(route: ModelRoute, now: float) -> tuple[RolloutStatus, Transition]:
    rollout = route.spec.rollout
    assert rollout is not None
    status = RolloutStatus(
        route=f"{route.metadata.namespace}/{route.metadata.name}",
        service=route.spec.service,
        digest=spec_digest(route),
        step=1,
        weight=rollout.steps[0],
        started=now,
        last_eval=now,
    )
    return status, Transition("started", status.weight, f"step 1: canary weight {status.weight}")


def _results_json(results: list[CheckResult]) -> list[dict[str, Any]]:
    return [r.to_json() for r in results]


def tick(status: RolloutStatus, rollout: Rollout, window: Window, now: float) -> Transition | None:
    """Analyse one interval; the transition it causes, if any (``status`` is updated)."""
    if status.state != "progressing":
        return None
    results = evaluate(rollout.checks, window)
    status.checks = _results_json(results)
    failed = [r for r in results if r.ok is False]
    if failed:
        status.last_eval = now
        status.failed += 1
        reason = "; ".join(r.describe() for r in failed)
        if status.failed >= rollout.threshold:
            status.state = "rolledBack"
            status.weight = 0
            status.reason = f"{reason} ({status.failed} failed checks, threshold {rollout.threshold})"
            return Transition("rolledBack", 0, status.reason)
        return Transition("checkFailed", status.weight, f"{reason} ({status.failed}/{rollout.threshold})")
    if window.canary.requests < rollout.min_requests:
        # not enough data: the window keeps growing (last_eval stays) until it has some
        status.reason = f"waiting for traffic: {window.canary.requests} canary requests this interval"
        return None
    status.last_eval = now
    status.reason = ""
    if status.step < len(rollout.steps):
        status.step += 1
        status.weight = rollout.steps[status.step - 1]
        return Transition("step", status.weight, f"step {status.step}: canary weight {status.weight}")
    status.state = "promoted"
    status.weight = 100
    return Transition("promoted", 100, f"all {len(rollout.steps)} steps passed")


def command(status: RolloutStatus, action: str, now: float, who: str) -> Transition:
    """An operator's ``promote`` / ``pause`` / ``resume`` / ``abort``; ValueError if not possible."""
    state = status.state
    if action == "pause":
        if state != "progressing":
            raise ValueError(f"rollout of {status.route} is {state}, not progressing")
        status.state = "paused"
        return Transition("paused", status.weight, f"paused by {who}")
    if action == "resume":
        if state != "paused":
            raise ValueError(f"rollout of {status.route} is {state}, not paused")
        status.state = "progressing"
        status.last_eval = now
        return Transition("resumed", status.weight, f"resumed by {who}")
    if action == "promote":
        if state in ("promoted",):
            raise ValueError(f"rollout of {status.route} is already promoted")
        status.state, status.weight, status.reason = "promoted", 100, f"promoted by {who}"
        return Transition("promoted", 100, status.reason)
    if action == "abort":
        if state == "rolledBack":
            raise ValueError(f"rollout of {status.route} is already rolled back")
        status.state, status.weight, status.reason = "rolledBack", 0, f"aborted by {who}"
        return Transition("rolledBack", 0, status.reason)
    raise ValueError(f"unknown rollout action {action!r} (promote, pause, resume, abort)")
