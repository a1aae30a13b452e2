"""What the rollout controller reads from the audit trail, kept for a bounded time.

Sidecars ship their audit records to the control plane's store (chains by sender identity);
:class:`AuditFacts` follows every chain from where it last stopped and keeps, for the last
``RETENTION`` seconds:

- rollout windows (callers' per-subset outcomes and mirror comparisons, by route);
- DLP findings, by the identity of the sidecar whose answers had them;
- denied requests, by the identity of the caller that was denied;
- detection findings (OCSF class 2004), with the identities they name.

Facts are dated when they ARRIVE (the poll that read them), not by the sender's clock: an
interval is analysed with what reached the control plane during it, so a record shipped a
second late counts in the next interval instead of being missed. Records stored before the
controller started are skipped (their intervals were analysed by the previous process).

:meth:`AuditFacts.window` assembles the :class:`~meshward.rollout.checks.Window` of one route
for one interval. Thread-compatible: used by the controller's one thread.
"""

from __future__ import annotations

import json
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from meshward.audit.store import AuditStore
from meshward.rollout.checks import ALERT_SOURCES, Window

__all__ = ["RETENTION", "AuditFacts"]

RETENTION = 900.0
_MAX_FACTS = 200_000
_READ_LIMIT = 5000


@dataclass(frozen=True, slots=True)
class _Fact:
    time: float
    kind: str  # window | dlp | deny | alert
    subject: str  # route (window), identity (dlp, deny), JSON text (alert)
    data: Any


class AuditFacts:
    def __init__(self, store: AuditStore) -> None:
        self.store = store
        self.cursors: dict[str, int] = {c.slug: c.seq for c in store.chains()}
        self.facts: deque[_Fact] = deque(maxlen=_MAX_FACTS)

    def poll(self) -> int:
        """Read what arrived since the last poll; the number of records read."""
        read = 0
        now = time.time()
        horizon = now - RETENTION
        for chain in self.store.chains():
            after = self.cursors.get(chain.slug, 0)
            if chain.seq <= after:
                continue
            for record in self.store.read(chain.slug, after, _READ_LIMIT):
                self.cursors[chain.slug] = record.seq
                read += 1
                fact = _fact(chain.source, record.event, now)
                if fact is not None:
                    self.facts.append(fact)
        while self.facts and self.facts[0].time < horizon:
            self.facts.popleft()
        return read

    def window(
        self, route: str, start: float, end: float, canary: frozenset[str], stable: frozenset[str]
    ) -> Window:
        w = Window(start, end, canary_identities=canary)
        only_canary = canary - stable
        for f in self.facts:
            if not start < f.time <= end:
                continue
            if f.kind == "window" and f.subject == route:
                subsets = f.data.get("subsets", {})
                for name, target in (("canary", w.canary), ("stable", w.stable)):
                    s = subsets.get(name)
                    if isinstance(s, dict):
                        target.add(
                            int(s.get("requests", 0)), int(s.get("errors", 0)), s.get("latency_ms", [])
                        )
                mirror = f.data.get("mirror")
                if isinstance(mirror, dict):
                    w.mirror_compared += int(mirror.get("compared", 0))
                    w.mirror_differ += int(mirror.get("differ", 0))
            elif f.kind == "dlp" and f.subject in only_canary:
                w.dlp_findings += int(f.data)
            elif f.kind == "deny" and f.subject in only_canary:
                w.denials += 1
            elif f.kind == "alert" and any(i in f.subject for i in only_canary):
                w.alerts += 1
        for source in ALERT_SOURCES:
            w.alerts += source(only_canary, start, end)
        return w


def _fact(source: str, event: dict[str, Any], t: float) -> _Fact | None:
    try:
        cls = event.get("class_uid")
        meshward = (event.get("unmapped") or {}).get("meshward") or {}
        if cls == 0 and isinstance(meshward.get("rollout"), dict):
            body = meshward["rollout"]
            return _Fact(t, "window", str(body.get("route", "")), body)
        if cls == 4002:
            findings = meshward.get("dlp_findings")
            if isinstance(findings, dict) and findings:
                return _Fact(t, "dlp", source, sum(int(v) for v in findings.values()))
            if event.get("action_id") == 2:
                actor = ((event.get("actor") or {}).get("user") or {}).get("uid") or ""
                return _Fact(t, "deny", str(actor), 1)
        if cls == 2004:
            return _Fact(t, "alert", json.dumps(event, sort_keys=True)[:8192], 1)
    except (TypeError, ValueError, AttributeError):
        return None
    return None
