"""The demo's rollout step: a leaking chat-v2 canary, rolled back by the DLP check on its own.

The step applies (to the running mesh) a ``chat-v2`` Workload whose model leaks an email
address in every answer, a ``ModelRoute`` that starts it at 50 % with a DLP check every second,
and a policy letting a tester identity chat. ``meshward up`` starts chat-v2 (it follows the
config); the tester's traffic reaches it; the mesh's DLP masks the leaks and records findings;
the control plane rolls the canary back. Then ``meshward rollback`` restores the demo's config
(chat-v2 is stopped again).
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

from meshward.demo.cluster import NOT_YET
from meshward.demo.report import Outcome, StepResult
from meshward.mesh.errors import MeshError
from meshward.mesh.polling import wait_until

if TYPE_CHECKING:
    from meshward.demo.scenario import Scenario

__all__ = ["CANARY_FILE", "rollout_canary"]

TITLE = "roll out a chat-v2 that leaks emails; the DLP check rolls it back"
EXPECTED = "rolledBack by dlpFindingsPer1k; callers never saw an address"

CANARY_FILE = """\
apiVersion: meshward.dev/v1alpha1
kind: Workload
metadata: {name: chat-v2, namespace: llm, labels: {app: chat, version: v2}}
spec:
  service: chat
  serviceAccount: chat-v2
  command: ["python", "-m", "examples.models.chat", "--port", "{port}", "--echo", "--leak-emails"]
  readiness: {httpGet: /health}
---
apiVersion: meshward.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: canary-tester-may-chat, namespace: llm}
spec:
  selector: {matchLabels: {app: chat}}
  action: ALLOW
  rules:
  - from: [{source: {principals: ["demo.local/ns/web/sa/canary-tester"]}}]
    to: [{operation: {methods: ["POST"], paths: ["/v1/chat/completions"]}}]
---
apiVersion: meshward.dev/v1alpha1
kind: ModelRoute
metadata: {name: chat, namespace: llm}
spec:
  service: chat
  subsets: {stable: {version: v1}, canary: {version: v2}}
  stickyBy: none
  rollout:
    steps: [50, 100]
    interval: 1s
    threshold: 2
    checks:
    - {metric: dlpFindingsPer1k, max: 0}
"""


def _result(ok: bool, observed: str) -> StepResult:
    return StepResult(TITLE, EXPECTED, observed, Outcome.PASS if ok else Outcome.FAIL)


def _rollout(scenario: Scenario) -> dict[str, Any]:
    done = scenario.cli.run("rollout", "status", "chat", "--json")
    if done.returncode != 0:
        return {}
    doc: dict[str, Any] = json.loads(done.stdout)
    return doc


def rollout_canary(scenario: Scenario) -> StepResult:
    before = scenario.generation()
    if before is None:
        return _result(False, "no current generation in `meshward status`")
    canary = scenario.workdir / "chat-canary.yaml"
    canary.write_text(CANARY_FILE)
    applied = scenario.cli.run("apply", "-f", str(canary))
    if applied.returncode != 0:
        return _result(False, f"apply failed: {applied.stderr.strip()[-160:]}")
    try:

        def canary_ready() -> bool:
            return any(
                w.get("name") == "chat-v2" and w.get("ready")
                for w in scenario.cli.status().get("workloads", [])
            )

        try:
            wait_until(canary_ready, 60, "chat-v2", interval=0.3, tolerate=NOT_YET)
        except MeshError:
            return _result(False, "chat-v2 was not started by the running mesh within 60 s")
        leaked = 0
        sent = 0
        doc: dict[str, Any] = {}
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            done = scenario.cli.run_as(
                "web/canary-tester", "examples.clients.chat", "--repeat", "40", "Any news?", timeout=60
            )
            for line in done.stdout.splitlines():
                if line.startswith("{"):
                    sent += 1
                    leaked += "jane.doe@" in line
            doc = _rollout(scenario)
            if doc.get("state") in ("rolledBack", "promoted"):
                break
        if doc.get("state") != "rolledBack":
            return _result(
                False, f"rollout {doc.get('state', 'unknown')} after {sent} requests: {doc.get('reason', '')}"
            )
        observed = (
            f"{sent} requests; rolled back at step {doc['step']}: {doc['reason'][:80]}; "
            f"addresses seen by the caller: {leaked}"
        )
        return _result("dlpFindingsPer1k" in doc["reason"] and leaked == 0, observed)
    finally:
        scenario.cli.run("rollback", str(before))  # the demo's own config again; chat-v2 stops
