"""The control plane's detectors: sidecar reports (plain data) and ``now`` in, signals out.

Every detector keeps sliding one-minute sums per subject (:class:`SlidingSum`: the values of
the last 60 s, at most ``MAX_SUBJECTS`` subjects, least recently seen dropped) and, where it
compares a subject with its own past, a :class:`~meshward.detection.stats.RobustBaseline` of
per-minute values (O(1) per subject). Methods, parameters and bounds (``docs/detection.md``):

- **volume** (per caller identity, and per protected workload): requests, bytes and tokens per
  minute above absolute ceilings (``maxRequestsPerMinute``, ``maxBytesPerMinute``,
  ``maxTokensPerMinute``); the sliding minute's requests scoring above ``sensitivity`` robust
  z-scores against the subject's EWMA/MAD baseline of completed minutes (after ``WARMUP_MINUTES``);
  a caller calling a workload it never called before, once that workload has been watched for
  ``NEW_PAIR_WARMUP`` seconds (``newPairs``; low severity).
- **auth**: refused TLS handshakes per source address per minute (``maxRefusalsPerMinute``),
  reported by sidecars; refused CSRs and join tokens per source address (the control plane's
  own refusals), and at once any renewal attempt by a revoked identity.
- **violations**: denials (authz, limits, DLP blocks) per caller per minute
  (``maxDenialsPerMinute``); enumeration: distinct paths and models one caller touched within a
  minute (``maxDistinctPathsPerMinute``).
- **exfiltration**: DLP findings in responses per caller per minute (``maxFindingsPerMinute``),
  any export-limit hit, response bytes per minute above ``maxResponseBytesPerMinute`` or far
  above the caller's own baseline (``sensitivity``).
- **extraction**: PRADA's alarm raised in the model's sidecar (:mod:`meshward.detection.prada`);
  for LLM endpoints, more than ``maxQueriesPerMinute`` queries from one caller, or at least
  ``minQueries`` prompts in a minute of which ≥ 90 % are distinct and ≥ 50 % share one template
  prefix (many distinct, templated prompts).
- **drift**: per workload and model, the histogram of outputs of the latest ``window`` outputs
  against the first ``baseline`` outputs by PSI (``psi``), the mean latency against the
  baseline's (``latencyFactor``) and the error rate (+20 points); the alert names the version.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from meshward.detection.settings import WorkloadDetection
from meshward.detection.signals import Signal
from meshward.detection.stats import RobustBaseline, psi

__all__ = ["MAX_SUBJECTS", "NEW_PAIR_WARMUP", "WARMUP_MINUTES", "Detectors", "SlidingSum"]

MINUTE = 60.0
MAX_SUBJECTS = 10_000
WARMUP_MINUTES = 10
NEW_PAIR_WARMUP = 600.0
MAX_PAIRS = 10_000


class SlidingSum:
    """Per subject: the sum of the values of the last ``horizon`` seconds."""

    def __init__(self, horizon: float = MINUTE, max_subjects: int = MAX_SUBJECTS) -> None:
        self.horizon = horizon
        self.max_subjects = max_subjects
        self.series: OrderedDict[str, tuple[deque[tuple[float, float]], list[float]]] = OrderedDict()

    def add(self, subject: str, now: float, value: float) -> float:
        entry = self.series.get(subject)
        if entry is None:
            entry = self.series[subject] = (deque(), [0.0])
            while len(self.series) > self.max_subjects:
                self.series.popitem(last=False)
        else:
            self.series.move_to_end(subject)
        points, total = entry
        if value:
            points.append((now, value))
            total[0] += value
        cutoff = now - self.horizon
        while points and points[0][0] <= cutoff:
            total[0] -= points.popleft()[1]
        return max(0.0, total[0])

    def value(self, subject: str, now: float) -> float:
        return self.add(subject, now, 0.0) if subject in self.series else 0.0

    def size(self) -> int:
        return sum(len(p) for p, _ in self.series.values())


@dataclass
class _MinuteBaselines:
    """Completed-minute totals per subject, learned into a RobustBaseline each minute."""

    floor: float = 1.0
    current: dict[str, float] = field(default_factory=dict)
    baselines: OrderedDict[str, RobustBaseline] = field(default_factory=OrderedDict)
    minute: int = -1

    def roll(self, now: float) -> None:
        minute = int(now // MINUTE)
        if self.minute < 0:
            self.minute = minute
        if minute == self.minute:
            return
        gap = min(minute - self.minute, 60)
        for subject, total in self.current.items():
            self._baseline(subject).update(total, clip=3.0)
        for subject, b in self.baselines.items():  # quiet minutes are data too (bounded catch-up)
            for _ in range(gap - 1 if subject in self.current else gap):
                b.update(0.0, clip=3.0)
        self.current.clear()
        self.minute = minute

    def _baseline(self, subject: str) -> RobustBaseline:
        b = self.baselines.get(subject)
        if b is None:
            b = self.baselines[subject] = RobustBaseline(floor=self.floor)
            while len(self.baselines) > MAX_SUBJECTS:
                self.baselines.popitem(last=False)
        return b

    def add(self, subject: str, value: float) -> None:
        self.current[subject] = self.current.get(subject, 0.0) + value

    def score(self, subject: str, value: float) -> tuple[float, RobustBaseline | None]:
        b = self.baselines.get(subject)
        if b is None or b.count < WARMUP_MINUTES:
            return 0.0, b
        return b.score(value), b


@dataclass
class _Drift:
    baseline: dict[str, float] = field(default_factory=dict)
    baseline_n: int = 0
    baseline_version: str = ""
    baseline_requests: int = 0
    baseline_latency: float = 0.0
    baseline_errors: int = 0
    recent: deque[tuple[dict[str, int], int, int, float, str]] = field(default_factory=deque)


def _iso_window(report: dict[str, Any]) -> list[float]:
    window = report.get("window")
    return window if isinstance(window, list) else []


def _int(value: Any) -> int:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0


class Detectors:
    """All control-plane detector state (pure: no clock, no I/O)."""

    def __init__(self) -> None:
        self.sums: dict[str, SlidingSum] = {
            name: SlidingSum()
            for name in (
                "requests",
                "workload_requests",
                "bytes",
                "tokens",
                "denials",
                "findings",
                "export",
                "bytes_out",
                "handshakes",
                "csr",
                "prompts",
                "prompts_distinct",
                "prompts_templated",
            )
        }
        self.request_minutes = _MinuteBaselines(floor=5.0)
        self.bytes_out_minutes = _MinuteBaselines(floor=64 * 1024.0)
        self.paths: OrderedDict[str, dict[str, float]] = OrderedDict()
        self.pairs: OrderedDict[tuple[str, str], None] = OrderedDict()
        self.workload_first_seen: dict[str, float] = {}
        self.drift: dict[tuple[str, str], _Drift] = {}

    # -- sizes (metrics) ---------------------------------------------------------------------
    def sizes(self) -> dict[str, int]:
        return {
            "volume": self.sums["requests"].size()
            + self.sums["workload_requests"].size()
            + len(self.request_minutes.baselines)
            + len(self.pairs),
            "auth": self.sums["handshakes"].size() + self.sums["csr"].size(),
            "extraction": self.sums["prompts"].size(),
            "violations": self.sums["denials"].size() + sum(len(p) for p in self.paths.values()),
            "exfiltration": self.sums["findings"].size()
            + self.sums["bytes_out"].size()
            + len(self.bytes_out_minutes.baselines),
            "drift": sum(len(d.recent) + len(d.baseline) for d in self.drift.values()),
        }

    # -- sidecar reports ---------------------------------------------------------------------
    def ingest(self, report: dict[str, Any], detection: WorkloadDetection, now: float) -> list[Signal]:
        """One sidecar report (see :mod:`meshward.detection.aggregate`) → the signals it raises."""
        workload = str(report.get("workload", ""))
        signals: list[Signal] = []
        self.request_minutes.roll(now)
        self.bytes_out_minutes.roll(now)
        self.workload_first_seen.setdefault(workload, now)
        window = _iso_window(report)

        def raise_(detector: str, subject: str, summary: str, severity: str = "", **evidence: Any) -> None:
            params = detection.params(detector) or {}
            evidence.setdefault("window_seconds", MINUTE)
            if window:
                evidence.setdefault("report_window", window)
            signals.append(
                Signal(
                    detector,
                    subject,
                    severity or str(params.get("severity", "medium")),
                    summary,
                    evidence,
                    workload,
                )
            )

        callers = report.get("callers")
        if isinstance(callers, dict):
            for caller, counts in callers.items():
                if isinstance(counts, dict):
                    self._caller(str(caller), counts, workload, detection, now, raise_)
            workload_requests = sum(_int(c.get("requests")) for c in callers.values() if isinstance(c, dict))
            volume = detection.params("volume")
            if volume is not None and workload_requests:
                total = self.sums["workload_requests"].add(workload, now, workload_requests)
                self.request_minutes.add(f"workload:{workload}", workload_requests)
                z, base = self.request_minutes.score(f"workload:{workload}", total)
                if base is not None and z > float(volume["sensitivity"]) and total >= 120:
                    raise_(
                        "volume",
                        f"workload:{workload}",
                        f"{workload} received {total:.0f} requests in a minute (baseline {base.mean:.0f})",
                        requests_per_minute=total,
                        baseline_mean=round(base.mean, 2),
                        baseline_mad=round(base.mad, 2),
                        score=round(z, 2),
                        threshold=volume["sensitivity"],
                    )
        handshakes = report.get("handshakes")
        auth = detection.params("auth")
        if isinstance(handshakes, dict) and auth is not None:
            for address, reasons in handshakes.items():
                if not isinstance(reasons, dict):
                    continue
                n = sum(_int(v) for v in reasons.values())
                total = self.sums["handshakes"].add(str(address), now, n)
                if total > int(auth["maxRefusalsPerMinute"]):
                    raise_(
                        "auth",
                        f"address:{address}",
                        f"{total:.0f} refused TLS handshakes from {address} in a minute",
                        refused_handshakes=total,
                        threshold=auth["maxRefusalsPerMinute"],
                        reasons={str(k): _int(v) for k, v in reasons.items()},
                    )
        extraction = report.get("extraction")
        if isinstance(extraction, dict) and detection.params("extraction") is not None:
            for caller, verdict in extraction.items():
                if isinstance(verdict, dict) and verdict.get("alarm") is True:
                    raise_(
                        "extraction",
                        str(caller),
                        f"PRADA: W={verdict.get('w')} < δ={verdict.get('threshold')} after "
                        f"{verdict.get('queries')} queries on {verdict.get('model')}",
                        method="PRADA (Shapiro-Wilk W over min L2 distances)",
                        w=verdict.get("w"),
                        threshold=verdict.get("threshold"),
                        queries=verdict.get("queries"),
                        distances=verdict.get("distances"),
                        model=verdict.get("model"),
                        samples=[verdict.get("sample")],
                    )
        prompts = report.get("prompts")
        extraction_params = detection.params("extraction")
        if isinstance(prompts, dict) and extraction_params is not None:
            for caller, p in prompts.items():
                if isinstance(p, dict):
                    self._prompts(str(caller), p, extraction_params, now, raise_)
        models = report.get("models")
        drift = detection.params("drift")
        if isinstance(models, dict) and drift is not None:
            for key, mw in models.items():
                if isinstance(mw, dict):
                    self._drift(workload, str(key), mw, drift, raise_)
        return signals

    def _caller(
        self,
        caller: str,
        c: dict[str, Any],
        workload: str,
        detection: WorkloadDetection,
        now: float,
        raise_: Callable[..., None],
    ) -> None:
        samples = [s for s in c.get("samples", []) if isinstance(s, str)][:3]
        requests = _int(c.get("requests"))
        violations = detection.params("violations")
        if violations is not None:
            denials = self.sums["denials"].add(caller, now, _int(c.get("denials")))
            if denials > int(violations["maxDenialsPerMinute"]):
                raise_(
                    "violations",
                    caller,
                    f"{denials:.0f} denied requests from {caller} in a minute",
                    denials_per_minute=denials,
                    threshold=violations["maxDenialsPerMinute"],
                    authz=_int(c.get("authz_denials")),
                    limited=_int(c.get("limited")),
                    dlp_blocks=_int(c.get("dlp_blocks")),
                    samples=samples,
                )
            seen = self.paths.get(caller)
            if seen is None:
                seen = self.paths[caller] = {}
                while len(self.paths) > MAX_SUBJECTS:
                    self.paths.popitem(last=False)
            else:
                self.paths.move_to_end(caller)
            for item in [*c.get("paths", []), *(f"model:{m}" for m in c.get("models", []))]:
                if isinstance(item, str) and (item in seen or len(seen) < 1000):
                    seen[item] = now
            for item in [k for k, t in seen.items() if t <= now - MINUTE]:
                del seen[item]
            if len(seen) > int(violations["maxDistinctPathsPerMinute"]):
                raise_(
                    "violations",
                    caller,
                    f"enumeration: {caller} touched {len(seen)} distinct paths/models in a minute",
                    kind="enumeration",
                    distinct_paths_per_minute=len(seen),
                    threshold=violations["maxDistinctPathsPerMinute"],
                    examples=sorted(seen)[:5],
                    samples=samples,
                )
        exfil = detection.params("exfiltration")
        if exfil is not None:
            findings = self.sums["findings"].add(caller, now, _int(c.get("findings_out")))
            exports = self.sums["export"].add(caller, now, _int(c.get("export_hits")))
            out = _int(c.get("bytes_out"))
            bytes_out = self.sums["bytes_out"].add(caller, now, out)
            self.bytes_out_minutes.add(caller, out)
            z, base = self.bytes_out_minutes.score(caller, bytes_out)
            if findings > int(exfil["maxFindingsPerMinute"]):
                raise_(
                    "exfiltration",
                    caller,
                    f"{findings:.0f} sensitive records in responses to {caller} in a minute",
                    findings_in_responses=findings,
                    threshold=exfil["maxFindingsPerMinute"],
                    samples=samples,
                )
            elif exports > 0 and _int(c.get("export_hits")):
                raise_(
                    "exfiltration",
                    caller,
                    f"export limit hit by {caller} ({exports:.0f} in a minute)",
                    export_limit_hits=exports,
                    samples=samples,
                )
            elif bytes_out > int(exfil["maxResponseBytesPerMinute"]) or (
                base is not None and z > float(exfil["sensitivity"]) and bytes_out > 1 << 20
            ):
                raise_(
                    "exfiltration",
                    caller,
                    f"{caller} received {bytes_out:.0f} response bytes in a minute",
                    response_bytes_per_minute=bytes_out,
                    threshold=exfil["maxResponseBytesPerMinute"],
                    baseline_mean=None if base is None else round(base.mean),
                    score=round(z, 2),
                )
        volume = detection.params("volume")
        if volume is not None and requests:
            total = self.sums["requests"].add(caller, now, requests)
            moved = self.sums["bytes"].add(caller, now, _int(c.get("bytes_in")) + _int(c.get("bytes_out")))
            tokens = self.sums["tokens"].add(caller, now, _int(c.get("tokens")))
            self.request_minutes.add(caller, requests)
            z, base = self.request_minutes.score(caller, total)
            ceilings = (
                ("requests", total, int(volume["maxRequestsPerMinute"])),
                ("bytes", moved, int(volume["maxBytesPerMinute"])),
                ("tokens", tokens, int(volume["maxTokensPerMinute"])),
            )
            crossed = [(what, v, limit) for what, v, limit in ceilings if v > limit]
            if crossed:
                what, v, limit = crossed[0]
                raise_(
                    "volume",
                    caller,
                    f"{caller}: {v:.0f} {what} in a minute (ceiling {limit})",
                    **{f"{what}_per_minute": v, "threshold": limit},
                    samples=samples,
                )
            elif base is not None and z > float(volume["sensitivity"]) and total >= 60:
                raise_(
                    "volume",
                    caller,
                    f"{caller}: {total:.0f} requests in a minute, {z:.1f} MADs above its baseline",
                    requests_per_minute=total,
                    baseline_mean=round(base.mean, 2),
                    baseline_mad=round(base.mad, 2),
                    score=round(z, 2),
                    threshold=volume["sensitivity"],
                    samples=samples,
                )
            pair = (caller, workload)
            if pair not in self.pairs:
                self.pairs[pair] = None
                while len(self.pairs) > MAX_PAIRS:
                    self.pairs.popitem(last=False)
                first = self.workload_first_seen.get(workload, now)
                if volume.get("newPairs") and now - first >= NEW_PAIR_WARMUP and caller != "other":
                    raise_(
                        "volume",
                        caller,
                        f"new caller: {caller} called {workload} for the first time",
                        severity="low",
                        kind="new_pair",
                        workload=workload,
                        watched_seconds=round(now - first),
                        samples=samples,
                    )
        extraction = detection.params("extraction")
        if extraction is not None and requests and not c.get("numeric", False):
            queries = self.sums["requests"].value(caller, now) if volume is not None else requests
            llm = any(isinstance(m, str) for m in c.get("models", [])) and not any(
                isinstance(p, str) and p.startswith("/v2/") for p in c.get("paths", [])
            )
            if llm and queries > int(extraction["maxQueriesPerMinute"]):
                raise_(
                    "extraction",
                    caller,
                    f"{caller}: {queries:.0f} LLM queries in a minute (model extraction heuristic)",
                    method="volume heuristic (LLM)",
                    queries_per_minute=queries,
                    threshold=extraction["maxQueriesPerMinute"],
                    samples=samples,
                )

    def _prompts(
        self, caller: str, p: dict[str, Any], params: dict[str, Any], now: float, raise_: Callable[..., None]
    ) -> None:
        """Many distinct prompts cut from one template, from one caller: LLM extraction."""
        n = self.sums["prompts"].add(caller, now, _int(p.get("prompts")))
        distinct = self.sums["prompts_distinct"].add(caller, now, _int(p.get("distinct")))
        templated = self.sums["prompts_templated"].add(caller, now, _int(p.get("top_prefix")))
        minimum = int(params["minQueries"])
        if n >= minimum and distinct >= 0.9 * n and templated >= 0.5 * n:
            raise_(
                "extraction",
                caller,
                f"{caller}: {n:.0f} distinct prompts from one template in a minute (LLM extraction heuristic)",
                method="prompt diversity (LLM)",
                prompts_per_minute=n,
                distinct_share=round(distinct / n, 3),
                template_share=round(templated / n, 3),
                min_queries=minimum,
            )

    def _drift(
        self, workload: str, key: str, mw: dict[str, Any], params: dict[str, Any], raise_: Callable[..., None]
    ) -> None:
        model, _, version = key.rpartition("@")
        state = self.drift.get((workload, model))
        if state is None:
            if len(self.drift) >= MAX_SUBJECTS:
                return
            state = self.drift[(workload, model)] = _Drift()
        outputs = {str(k): _int(v) for k, v in (mw.get("outputs") or {}).items()}
        n = sum(outputs.values())
        requests, errors = _int(mw.get("requests")), _int(mw.get("errors"))
        latency = float(mw.get("latency_sum") or 0.0)
        baseline_size, window = int(params["baseline"]), int(params["window"])
        if state.baseline_n < baseline_size:
            for k, v in outputs.items():
                state.baseline[k] = state.baseline.get(k, 0.0) + v
            state.baseline_n += n
            state.baseline_requests += requests
            state.baseline_errors += errors
            state.baseline_latency += latency
            state.baseline_version = version
            return
        state.recent.append((outputs, requests, errors, latency, version))
        total = sum(sum(o.values()) for o, *_ in state.recent)
        while state.recent and total - sum(state.recent[0][0].values()) >= window:
            total -= sum(state.recent.popleft()[0].values())
        while len(state.recent) > 10_000:
            state.recent.popleft()
        current: dict[str, float] = {}
        for o, *_ in state.recent:
            for k, v in o.items():
                current[k] = current.get(k, 0.0) + v
        subject = f"model:{workload}/{model}@{version}"
        if total >= window:
            index = psi(state.baseline, current)
            if index > float(params["psi"]):
                raise_(
                    "drift",
                    subject,
                    f"output distribution of {model} version {version} drifted (PSI {index:.2f})",
                    psi=round(index, 4),
                    threshold=params["psi"],
                    version=version,
                    baseline_version=state.baseline_version,
                    baseline={k: int(v) for k, v in state.baseline.items()},
                    current={k: int(v) for k, v in current.items()},
                )
        recent_requests = sum(r for _, r, *_ in state.recent)
        if recent_requests >= 20 and state.baseline_requests:
            base_latency = state.baseline_latency / state.baseline_requests
            now_latency = sum(lat for *_, lat, _ in state.recent) / recent_requests
            factor = float(params["latencyFactor"])
            if base_latency > 0 and now_latency > factor * base_latency and now_latency > 0.005:
                raise_(
                    "drift",
                    subject,
                    f"latency of {model} version {version}: {now_latency * 1000:.1f} ms "
                    f"(baseline {base_latency * 1000:.1f} ms)",
                    kind="latency",
                    latency_ms=round(now_latency * 1000, 2),
                    baseline_latency_ms=round(base_latency * 1000, 2),
                    threshold=factor,
                    version=version,
                )
            base_err = state.baseline_errors / state.baseline_requests
            now_err = sum(e for _, _, e, *_ in state.recent) / recent_requests
            if now_err - base_err > 0.2:
                raise_(
                    "drift",
                    subject,
                    f"error rate of {model} version {version}: {now_err:.0%} (baseline {base_err:.0%})",
                    kind="errors",
                    error_rate=round(now_err, 4),
                    baseline_error_rate=round(base_err, 4),
                    version=version,
                )

    # -- the control plane's own observations --------------------------------------------------
    def csr_refused(
        self, address: str, reason: str, identity: str | None, detection: WorkloadDetection, now: float
    ) -> list[Signal]:
        """A refused CSR or join token (the identity ledger's refusal)."""
        auth = detection.params("auth")
        if auth is None:
            return []
        severity = str(auth.get("severity", "high"))
        if identity and "revoked" in reason.lower():
            return [
                Signal(
                    "auth",
                    identity,
                    "critical" if severity == "critical" else "high",
                    f"renewal attempted by revoked identity {identity}",
                    {"kind": "revoked_renewal", "reason": reason, "address": address},
                )
            ]
        total = self.sums["csr"].add(address, now, 1)
        threshold = max(5, int(auth["maxRefusalsPerMinute"]) // 4)  # CSRs are rarer than handshakes
        if total >= threshold:
            return [
                Signal(
                    "auth",
                    f"address:{address}",
                    severity,
                    f"{total:.0f} refused certificate requests from {address} in a minute",
                    {
                        "kind": "csr_refused",
                        "refused_csrs_per_minute": total,
                        "threshold": threshold,
                        "last_reason": reason,
                        "identity": identity,
                        "window_seconds": MINUTE,
                    },
                )
            ]
        return []
