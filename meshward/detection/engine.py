"""The control plane's detection: reports in, alerts out, delivered, answered (quarantine).

:class:`DetectionEngine` is held by :class:`~meshward.control.service.ControlService`:

- ``ingest(body, peer)`` (``POST /v1/detection/report``): a sidecar's reports, accepted only for
  the workload its SVID serves, fed to :class:`~meshward.detection.detectors.Detectors` with
  that workload's settings (:func:`~meshward.detection.settings.detection_for`);
  ``csr_refused(...)``: the identity authority refused a CSR or join token.
- Correlation: a signal for a (detector, subject) whose latest alert is not resolved and was
  updated less than ``throttle`` seconds ago updates that alert (count, evidence, severity
  raised) instead of raising a new one: one alert per subject and detector per interval.
- Delivery of a new alert (never on the request path, never blocking it): an OCSF Detection
  Finding in the control plane's audit chain (and from there the SIEM sinks), and one outbox row
  per matching ``AlertSink``, sent by the engine's thread with backoff until the sink takes it.
- Response: when the DetectionPolicy behind the detector asks for ``quarantine`` and the subject
  is an identity, a generated DENY AuthorizationPolicy ``quarantine-<alert id>`` (the policy's
  namespace and selector, ``from.source.principals: [subject]``) is stored as a new config
  generation applied by ``detection: alert <id>``; the engine's thread removes it (a new
  generation) when it expires, or ``release`` does. ``mode: dryRun`` records what would be done.
- Metrics (``GET /v1/detection/metrics``, Prometheus text): alerts by detector and severity,
  detector state sizes, quarantines active, outbox pending.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from meshward.config.store import ApplyResult, ConfigStore
from meshward.detection.delivery import detection_finding, post_webhook, webhook_payload
from meshward.detection.detectors import Detectors
from meshward.detection.settings import WorkloadDetection, detection_for
from meshward.detection.signals import Alert, Signal, severity_rank
from meshward.detection.store import DetectionStore, QuarantineRecord
from meshward.identity.ledger import iso
from meshward.identity.spiffe import SpiffeId
from meshward.resources import KINDS, Resource
from meshward.resources.detection import AlertSink, DetectionPolicy

__all__ = ["DetectionEngine", "DetectionRefused", "alerts_for_subject", "quarantine_policy"]

log = logging.getLogger("meshward.detection")

THROTTLE_SECONDS = 300.0
RESOLVE_AFTER = 3600.0
TICK = 0.2
MAX_REPORTS = 200


class DetectionRefused(Exception):
    """A request to the detection API is refused: ``status`` is the HTTP status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _now_iso(now: float) -> str:
    return iso(dt.datetime.fromtimestamp(now, dt.UTC))


def alerts_for_subject(store: DetectionStore, subject: str, since: float | None = None) -> list[Alert]:
    """Alerts about ``subject`` (a SPIFFE ID, ``model:NS/NAME/MODEL@VERSION``, ``workload:NS/NAME``
    or ``address:IP``) updated at or after ``since`` (Unix time), newest first.

    Also matches subjects that start with ``subject`` followed by ``@`` or ``/``, so
    ``model:ml/fraud-model-v2`` finds the alerts of every model and version it serves.
    """
    exact = store.alerts(subject=subject, since_ts=since)
    if subject.startswith(("model:", "workload:")):
        wider = [
            a
            for a in store.alerts(since_ts=since)
            if a.subject != subject and a.subject.startswith((subject + "/", subject + "@"))
        ]
        merged = {a.id: a for a in [*exact, *wider]}
        return sorted(merged.values(), key=lambda a: a.updated, reverse=True)
    return exact


def quarantine_policy(alert: Alert, policy: DetectionPolicy, expires: float) -> Resource[Any]:
    """The generated, time-boxed DENY AuthorizationPolicy for ``alert``'s subject."""
    principal = alert.subject[len("spiffe://") :]
    doc = {
        "apiVersion": "meshward.dev/v1alpha1",
        "kind": "AuthorizationPolicy",
        "metadata": {
            "name": f"quarantine-{alert.id}",
            "namespace": policy.metadata.namespace,
            "labels": {"meshward.dev/generated-by": "detection"},
            "annotations": {
                "meshward.dev/alert": alert.id,
                "meshward.dev/detection-policy": f"{policy.metadata.namespace}/{policy.metadata.name}",
                "meshward.dev/expires": _now_iso(expires),
                "meshward.dev/reason": alert.summary[:200],
            },
        },
        "spec": {
            "selector": {"matchLabels": dict(policy.spec.selector.match_labels)},
            "action": "DENY",
            "rules": [{"from": [{"source": {"principals": [principal]}}]}],
        },
    }
    return KINDS["AuthorizationPolicy"].model_validate(doc)


class DetectionEngine:
    def __init__(
        self,
        state_dir: Path,
        config: ConfigStore,
        trust_domain: str,
        resources: Callable[[], Sequence[Resource[Any]]],
        record_audit: Callable[[dict[str, Any]], None],
        generated: Callable[[ApplyResult, str], None],
        throttle: float = THROTTLE_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = DetectionStore(state_dir / "detection.db")
        self.config = config
        self.trust_domain = trust_domain
        self.resources = resources
        self.record_audit = record_audit
        self.generated = generated
        self.throttle = throttle
        self.clock = clock
        self.detectors = Detectors()
        self.raised: Counter[tuple[str, str]] = Counter()
        self.reports = 0
        self._lock = threading.RLock()
        self._settings: dict[tuple[str, str], WorkloadDetection] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._backoff: dict[str, float] = {}

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="detection", daemon=True)
            self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    def config_changed(self) -> None:
        """A new generation: detector settings are recomputed on their next use."""
        with self._lock:
            self._settings.clear()

    def _loop(self) -> None:
        while not self._stop.wait(TICK):
            try:
                self.tick()
            except Exception:
                log.exception("detection: tick failed")

    def tick(self) -> None:
        """Expire quarantines, deliver the outbox, resolve alerts quiet for an hour."""
        now = self.clock()
        for q in self.store.quarantines("active"):
            if q.expires_ts <= now:
                self._lift(q, "expired", f"detection: quarantine {q.id} expired")
        self._deliver(now)
        for alert in self.store.stale_open(now - RESOLVE_AFTER):
            alert.state = "resolved"
            self.store.save(alert, now)

    # -- settings ----------------------------------------------------------------------------
    def _workload_settings(self, namespace: str, name: str) -> WorkloadDetection:
        key = (namespace, name)
        with self._lock:
            found = self._settings.get(key)
            if found is not None:
                return found
            from meshward.config.build import find_workload, mesh_spec

            resources = list(self.resources())
            workload = find_workload(resources, namespace, name) if namespace else None
            labels = dict(workload.metadata.labels) if workload is not None else {}
            root = mesh_spec(resources, self.trust_domain).root_namespace
            found = detection_for(resources, namespace, labels, root)
            if len(self._settings) > 10_000:
                self._settings.clear()
            self._settings[key] = found
            return found

    # -- input ---------------------------------------------------------------------------------
    def ingest(self, body: dict[str, Any], peer: SpiffeId) -> dict[str, Any]:
        """``POST /v1/detection/report``: a batch of one sidecar's reports."""
        from meshward.config.build import find_workload

        reports = body.get("reports")
        if not isinstance(reports, list) or len(reports) > MAX_REPORTS:
            raise DetectionRefused(400, f"'reports' must be a list of at most {MAX_REPORTS} reports")
        raised: list[str] = []
        for report in reports:
            if not isinstance(report, dict):
                raise DetectionRefused(400, "each report must be a JSON object")
            workload = str(report.get("workload", ""))
            ns, _, name = workload.partition("/")
            found = find_workload(self.resources(), ns, name)
            sa = found.service_account if found is not None else name
            if not ns or peer != SpiffeId(self.trust_domain, ns, sa):
                raise DetectionRefused(403, f"{peer.uri} may not report for workload {workload!r}")
            settings = self._workload_settings(ns, name)
            with self._lock:
                now = self.clock()
                self.reports += 1
                try:
                    signals = self.detectors.ingest(report, settings, now)
                except Exception:  # a detector bug: log it, keep the others (and traffic) going
                    log.exception("detection: a report from %s could not be evaluated", peer.uri)
                    continue
                raised.extend(a.id for a in (self.signal(s, settings, now) for s in signals) if a is not None)
        return {"accepted": len(reports), "alerts": sorted(set(raised))}

    def csr_refused(self, address: str, reason: str, identity: str | None = None) -> None:
        """The identity authority refused a CSR or a join token from ``address``."""
        settings = self._workload_settings("", "")
        with self._lock:
            now = self.clock()
            for s in self.detectors.csr_refused(address, reason, identity, settings, now):
                self.signal(s, settings, now)

    # -- correlation -------------------------------------------------------------------------
    def signal(self, signal: Signal, settings: WorkloadDetection, now: float) -> Alert | None:
        """Fold ``signal`` into the current alert of its subject and detector, or raise a new one."""
        with self._lock:
            latest = self.store.latest(signal.detector, signal.subject)
            if latest is not None:
                alert, updated_ts = latest
                if alert.state != "resolved" and now - updated_ts < self.throttle:
                    alert.count += 1
                    alert.updated = _now_iso(now)
                    alert.evidence = signal.evidence
                    if severity_rank(signal.severity) > severity_rank(alert.severity):
                        alert.severity = signal.severity
                    self.store.save(alert, now)
                    return None
            policy_ref, response = settings.response_for(signal.detector)
            alert = Alert(
                id=f"a{secrets.token_hex(4)}",
                time=_now_iso(now),
                updated=_now_iso(now),
                detector=signal.detector,
                severity=signal.severity,
                subject=signal.subject,
                state="open",
                summary=signal.summary,
                evidence=signal.evidence,
                workload=signal.workload,
                policy=policy_ref,
            )
            if response is not None and response.quarantine is not None:
                alert.response = self._quarantine(
                    alert, policy_ref, response.mode, response.quarantine.seconds, now
                )
            self.store.save(alert, now)
            self.raised[(alert.detector, alert.severity)] += 1
            self._announce(alert, now)
            return alert

    def _announce(self, alert: Alert, now: float, activity: str = "create") -> None:
        try:
            self.record_audit(detection_finding(alert, int(now * 1000), activity))
        except Exception:
            log.exception("detection: alert %s not recorded in the audit trail", alert.id)
        if activity != "create":
            return
        for sink in self._sinks():
            spec = sink.spec
            if severity_rank(alert.severity) < severity_rank(spec.min_severity):
                continue
            if spec.detectors and alert.detector not in spec.detectors:
                continue
            name = f"{sink.metadata.namespace}/{sink.metadata.name}"
            self.store.enqueue(name, webhook_payload(alert, spec.format))

    def _sinks(self) -> list[AlertSink]:
        return [r for r in self.resources() if isinstance(r, AlertSink)]

    def _deliver(self, now: float) -> None:
        sinks = {f"{s.metadata.namespace}/{s.metadata.name}": s for s in self._sinks()}
        for item in self.store.due(now):
            sink = sinks.get(item.sink)
            if sink is None:  # the sink was deleted: nothing to deliver to
                self.store.delivered(item.seq)
                continue
            if self._backoff.get(item.sink, 0.0) > now:
                continue
            if post_webhook(sink.spec.url, item.payload):
                self.store.delivered(item.seq)
                self._backoff.pop(item.sink, None)
            else:
                delay = min(5.0, 0.25 * 2 ** min(item.attempts, 5))
                self.store.retry_later(item.seq, now + delay)
                self._backoff[item.sink] = now + delay

    # -- quarantine --------------------------------------------------------------------------
    def _quarantine(self, alert: Alert, policy_ref: str | None, mode: str, seconds: float, now: float) -> str:
        if not alert.subject.startswith("spiffe://"):
            return f"no quarantine: {alert.subject} is not an identity"
        ns, _, name = (policy_ref or "").partition("/")
        policy = next(
            (
                r
                for r in self.resources()
                if isinstance(r, DetectionPolicy) and r.metadata.namespace == ns and r.metadata.name == name
            ),
            None,
        )
        if policy is None:
            return "no quarantine: the DetectionPolicy is gone"
        for q in self.store.quarantines("active"):
            if q.subject == alert.subject and q.namespace == ns:
                return f"already quarantined by {q.id} until {_now_iso(q.expires_ts)}"
        expires = now + seconds
        resource = quarantine_policy(alert, policy, expires)
        qid = f"q{alert.id[1:]}"
        if mode == "dryRun":
            self.store.save_quarantine(
                QuarantineRecord(
                    qid, alert.id, alert.subject, ns, resource.metadata.name, now, expires, "dry-run", "", 0
                )
            )
            return f"dry run: would quarantine {alert.subject} ({resource.ref}) until {_now_iso(expires)}"
        who = f"detection: alert {alert.id} ({alert.detector})"
        result = self.config.apply([resource], who, source="quarantine")
        self.store.save_quarantine(
            QuarantineRecord(
                qid,
                alert.id,
                alert.subject,
                ns,
                resource.metadata.name,
                now,
                expires,
                "active",
                "",
                result.generation,
            )
        )
        self._settings.clear()
        self.generated(result, who)
        return f"quarantine {qid}: {resource.ref} until {_now_iso(expires)} (generation {result.generation})"

    def _lift(self, q: QuarantineRecord, state: str, who: str) -> QuarantineRecord:
        result = self.config.remove(
            [("AuthorizationPolicy", q.namespace, q.name)], who, source="quarantine end"
        )
        ended = dataclasses.replace(q, state=state, ended_by=who, generation=result.generation)
        self.store.save_quarantine(ended)
        with self._lock:
            self._settings.clear()
        if result.changed:
            self.generated(result, who)
        return ended

    # -- operator API ------------------------------------------------------------------------
    def list_alerts(self, query: dict[str, str]) -> dict[str, Any]:
        since = query.get("since")
        subject = query.get("subject")
        try:
            since_ts = float(since) if since else None
        except ValueError:
            raise DetectionRefused(400, "since must be a Unix time") from None
        alerts = (
            alerts_for_subject(self.store, subject, since_ts)
            if subject
            else self.store.alerts(since_ts=since_ts)
        )
        return {"alerts": [a.to_json() for a in alerts]}

    def show(self, alert_id: str) -> dict[str, Any]:
        alert = self.store.get(alert_id)
        if alert is None:
            raise DetectionRefused(404, f"no alert {alert_id!r} (see `meshward alerts list`)")
        return alert.to_json()

    def ack(self, alert_id: str, who: str) -> dict[str, Any]:
        with self._lock:
            alert = self.store.get(alert_id)
            if alert is None:
                raise DetectionRefused(404, f"no alert {alert_id!r} (see `meshward alerts list`)")
            if alert.state == "open":
                alert.state = "acknowledged"
                alert.acknowledged_by = who
                now = self.clock()
                latest = self.store.latest(alert.detector, alert.subject)
                self.store.save(alert, latest[1] if latest and latest[0].id == alert.id else now)
                self._announce(alert, now, "update")
            return alert.to_json()

    def list_quarantines(self) -> dict[str, Any]:
        return {"quarantines": [q.to_json() for q in self.store.quarantines()]}

    def release(self, quarantine_id: str, who: str) -> dict[str, Any]:
        with self._lock:
            q = self.store.quarantine(quarantine_id)
            if q is None:
                alert_q = [x for x in self.store.quarantines() if x.alert_id == quarantine_id]
                q = alert_q[0] if alert_q else None
            if q is None:
                raise DetectionRefused(
                    404, f"no quarantine {quarantine_id!r} (see `meshward quarantine list`)"
                )
            if q.state != "active":
                raise DetectionRefused(409, f"quarantine {q.id} is {q.state}, not active")
            return self._lift(q, "released", f"{who}: quarantine release {q.id}").to_json()

    # -- metrics -----------------------------------------------------------------------------
    def metrics_text(self) -> str:
        lines = [
            "# HELP meshward_detection_alerts_total Alerts raised, by detector and severity",
            "# TYPE meshward_detection_alerts_total counter",
        ]
        for (detector, severity), n in sorted(self.raised.items()):
            lines.append(
                f'meshward_detection_alerts_total{{detector="{detector}",severity="{severity}"}} {n}'
            )
        lines += [
            "# HELP meshward_detection_state_size Entries held by each detector",
            "# TYPE meshward_detection_state_size gauge",
        ]
        with self._lock:
            sizes = self.detectors.sizes()
        for detector, n in sorted(sizes.items()):
            lines.append(f'meshward_detection_state_size{{detector="{detector}"}} {n}')
        lines += [
            "# TYPE meshward_detection_quarantines_active gauge",
            f"meshward_detection_quarantines_active {len(self.store.quarantines('active'))}",
            "# TYPE meshward_detection_outbox_pending gauge",
            f"meshward_detection_outbox_pending {self.store.pending()}",
            "# TYPE meshward_detection_reports_total counter",
            f"meshward_detection_reports_total {self.reports}",
        ]
        return "\n".join(lines) + "\n"
