"""The detection filter: per-window aggregates in the sidecar, PRADA on OIP v2 inputs, shipping.

Runs just before telemetry in the inbound chain, so on the response path it sees the model's
own answer (before DLP rewrites it). ``on_complete`` (every request, denied ones too) counts the
request in the current :class:`~meshward.detection.aggregate.WindowAggregate`: a few dict
operations. Only when this workload's detectors ask for it does the filter read more:

- ``extraction``: the request body of OIP v2 ``infer`` calls (its tensor rows) and the response
  (the predicted class of each row) feed :class:`~meshward.detection.prada.PradaMonitor`; the
  caller's W statistic and alarm travel in the report, the rows never leave the sidecar.
- ``extraction`` on LLM endpoints: per caller, how many prompts, how many distinct, and the largest
  group sharing a template prefix (hashes only; no prompt leaves the sidecar).
- ``drift``: the histogram of outputs (predicted classes; for chat, completion-length buckets),
  latency and errors per model and version.

:func:`start_detection_reporter` ships the aggregates to the control plane
(``POST /v1/detection/report``, over the sidecar's SVID) every ``MESHWARD_DETECTION_INTERVAL``
seconds (default 0.5); reports the control plane did not take are kept (at most
``MAX_PENDING``) and sent with the next ones. A detector that fails is logged and skipped: it
never fails a request.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from meshward.config.snapshot import MeshSnapshot
from meshward.detection.aggregate import WindowAggregate
from meshward.detection.settings import WorkloadDetection, detection_for
from meshward.filters.base import Filter, RequestContext, SidecarRuntime

__all__ = ["DetectionFilter", "DetectionShared", "build", "detection_state", "start_detection_reporter"]

log = logging.getLogger("meshward.detection")

REPORT_PATH = "/v1/detection/report"
MAX_PENDING = 120
MAX_CAPTURE = 1 << 20  # bodies larger than this are counted, not parsed (the loop stays responsive)
_SCRATCH = "detection"

ReportPost = Callable[[str, dict[str, Any]], Awaitable[tuple[int, Any]]]


class DetectionShared:
    """Per-process detection state (a :class:`SidecarRuntime` service), outliving generations."""

    def __init__(self, runtime: SidecarRuntime) -> None:
        self.runtime = runtime
        w = runtime.workload
        self.workload = f"{w.namespace}/{w.name}"
        self.version = w.labels.get("version")
        self.window = WindowAggregate(time.time())
        self.prada: Any = None  # PradaMonitor, made when an extraction detector is configured
        self.prada_key: tuple[Any, ...] = ()
        self.pending: list[dict[str, Any]] = []
        self.task: asyncio.Task[None] | None = None
        self.failures = 0
        if runtime.metrics_registry is not None:
            runtime.metrics_registry.register(_DetectionCollector(self))

    def configure(self, detection: WorkloadDetection) -> None:
        params = detection.params("extraction")
        if params is None:
            self.prada = None
            self.prada_key = ()
            return
        from meshward.detection.prada import PradaMonitor, PradaSettings

        settings = PradaSettings(
            threshold=float(params["threshold"]),
            min_queries=int(params["minQueries"]),
            max_samples=int(params["maxSamples"]),
        )
        key = (settings,)
        if key != self.prada_key:
            self.prada = PradaMonitor(settings)
            self.prada_key = key

    def take(self) -> WindowAggregate:
        window = self.window
        self.window = WindowAggregate(time.time())
        return window


class _DetectionCollector(Collector):
    """The sidecar's detector state sizes and unsent reports, at scrape time."""

    def __init__(self, shared: DetectionShared) -> None:
        self.shared = shared

    def collect(self) -> Iterator[Metric]:
        prada = self.shared.prada
        size = GaugeMetricFamily(
            "meshward_detection_sidecar_state_size",
            "Entries held by the sidecar's detectors",
            labels=["detector"],
        )
        size.add_metric(["extraction"], float(prada.size()) if prada is not None else 0.0)
        size.add_metric(["window_callers"], float(len(self.shared.window.callers)))
        yield size
        yield GaugeMetricFamily(
            "meshward_detection_reports_pending",
            "Reports not yet taken by the control plane",
            value=len(self.shared.pending),
        )
        yield CounterMetricFamily(
            "meshward_detection_report_failures", "Report deliveries that failed", value=self.shared.failures
        )


def detection_state(runtime: SidecarRuntime) -> DetectionShared:
    return runtime.service(DetectionShared, lambda: DetectionShared(runtime))


def _caller(ctx: RequestContext) -> str:
    return ctx.peer.spiffe_id or f"address:{ctx.peer.ip}"


def _rows(body: bytes) -> list[list[float]]:
    """The tensor rows of an OIP v2 infer request (first input; 2-D shape or one row)."""
    doc = json.loads(body)
    inputs = doc.get("inputs") if isinstance(doc, dict) else None
    if not isinstance(inputs, list) or not inputs or not isinstance(inputs[0], dict):
        return []
    tensor = inputs[0]
    data, shape = tensor.get("data"), tensor.get("shape")
    if not isinstance(data, list) or not data:
        return []
    if isinstance(data[0], list):
        rows = [r for r in data if isinstance(r, list)]
    else:
        width = shape[-1] if isinstance(shape, list) and shape and isinstance(shape[-1], int) else len(data)
        width = max(1, width)
        rows = [data[i : i + width] for i in range(0, len(data), width)]
    out: list[list[float]] = []
    for r in rows[:256]:
        vec = [float(v) for v in r if isinstance(v, int | float) and not isinstance(v, bool)]
        if len(vec) == len(r) and vec and all(math.isfinite(v) for v in vec):
            out.append(vec)
    return out


def _labels(body: bytes) -> list[str]:
    """The predicted class of each row from an OIP v2 infer response."""
    doc = json.loads(body)
    outputs = doc.get("outputs") if isinstance(doc, dict) else None
    if not isinstance(outputs, list):
        return []
    chosen = None
    for o in outputs:
        if isinstance(o, dict) and (
            str(o.get("datatype", "")).upper().startswith(("INT", "UINT", "BYTES", "BOOL"))
            or o.get("name") in ("predict", "predictions", "label", "class")
        ):
            chosen = o
            break
    if chosen is None and outputs and isinstance(outputs[0], dict):
        chosen = outputs[0]
    if chosen is None or not isinstance(chosen.get("data"), list):
        return []
    data = chosen["data"]
    shape = chosen.get("shape")
    if isinstance(shape, list) and len(shape) == 2 and isinstance(shape[1], int) and shape[1] > 1:
        flat = [v for row in data for v in (row if isinstance(row, list) else [row])]
        k = shape[1]
        return [str(max(range(k), key=lambda j: flat[i + j])) for i in range(0, len(flat) - k + 1, k)]
    labels = []
    for v in data:
        if isinstance(v, float):
            labels.append(f"{round(v, 1):.1f}")
        else:
            labels.append(str(v))
    return labels


def _prompt(body: bytes) -> str:
    """The last user message of a chat request, or a completion's prompt (for hashing only)."""
    doc = json.loads(body)
    if not isinstance(doc, dict):
        return ""
    prompt = doc.get("prompt")
    if isinstance(prompt, str):
        return prompt
    messages = doc.get("messages")
    if isinstance(messages, list):
        for m in reversed(messages):
            if isinstance(m, dict) and m.get("role") == "user" and isinstance(m.get("content"), str):
                return str(m["content"])
    return ""


def _length_bucket(tokens: int) -> str:
    """Completion length as a log2 bucket (drift of chat models)."""
    return "0" if tokens <= 0 else f"2^{int(math.log2(tokens))}"


class DetectionFilter(Filter):
    name = "detection"
    eager_safe = True  # never waits

    def __init__(self, shared: DetectionShared, detection: WorkloadDetection) -> None:
        self.shared = shared
        self.extraction = detection.params("extraction") is not None
        self.drift = detection.params("drift") is not None
        self.version = shared.version or "-"

    def wants_request_body(self, ctx: RequestContext) -> bool:
        if not self.extraction:
            return False
        ai = ctx.ai
        return (ai.protocol == "oip" and ai.operation == "infer") or (
            ai.protocol == "openai" and ai.operation in ("chat", "completion")
        )

    async def on_request(self, ctx: RequestContext) -> None:
        if ctx.findings:  # findings so far are the request's: the response's are counted apart
            ctx.scratch["detection.findings_in"] = sum(ctx.findings.values())
        return None

    def on_response_headers(self, ctx: RequestContext, status: int, headers: list[tuple[str, str]]) -> bool:
        if (self.extraction or self.drift) and ctx.ai.operation == "infer" and 200 <= status < 300:
            ctx.scratch[_SCRATCH] = bytearray()
        return False

    def on_response_chunk(self, ctx: RequestContext, chunk: bytes) -> bytes:
        captured = ctx.scratch.get(_SCRATCH)
        if captured is not None and len(captured) + len(chunk) <= MAX_CAPTURE:
            captured += chunk
        return chunk

    def on_complete(self, ctx: RequestContext) -> None:
        try:
            self._count(ctx)
        except Exception:  # a detector must never fail a request
            log.exception("detection: counting request %s failed", ctx.request_id)

    def _count(self, ctx: RequestContext) -> None:
        window = self.shared.window
        caller = _caller(ctx)
        findings = sum(ctx.findings.values()) if ctx.findings else 0
        findings_out = findings - int(ctx.scratch.get("detection.findings_in", 0)) if findings else 0
        dlp = ctx.scratch.get("dlp")
        window.request(
            caller,
            ctx.request_id,
            ctx.response_status,
            ctx.decision,
            ctx.path,
            ctx.ai.model,
            ctx.bytes_received,
            ctx.bytes_sent,
            ctx.tokens.total,
            findings_out,
            bool(dlp and dlp.get("blocked")),
            bool(dlp and dlp.get("export_limit")),
        )
        if not (self.extraction or self.drift) or ctx.decision == "deny":
            return
        if self.extraction and ctx.body and ctx.ai.protocol == "openai" and len(ctx.body) <= MAX_CAPTURE:
            text = _prompt(ctx.body)
            if text:
                window.prompt(caller, text)
        captured = ctx.scratch.get(_SCRATCH)
        model = f"{ctx.ai.model or '-'}@{self.version}"
        if self.drift and ctx.ai.operation in ("infer", "chat", "completion"):
            mw = window.model(model)
            mw.requests += 1
            mw.latency_sum += ctx.upstream_duration or 0.0
            if ctx.response_status >= 500:
                mw.errors += 1
        labels: list[str] = []
        if captured:
            labels = _labels(bytes(captured))
            if self.drift:
                mw = window.model(model)
                for label in labels:
                    mw.outputs[label] = mw.outputs.get(label, 0) + 1
        elif self.drift and ctx.ai.operation in ("chat", "completion") and ctx.response_status < 400:
            mw = window.model(model)
            bucket = _length_bucket(ctx.tokens.output)
            mw.outputs[bucket] = mw.outputs.get(bucket, 0) + 1
        prada = self.shared.prada
        if prada is not None and ctx.body and labels and len(ctx.body) <= MAX_CAPTURE:
            rows = _rows(ctx.body)
            verdict = None
            for row, label in zip(rows, labels, strict=False):
                seen = prada.observe(caller, row, label)
                if verdict is None or not verdict.alarm:  # an alarm within the batch sticks
                    verdict = seen
            earlier = window.extraction.get(caller)
            # An alarm sticks for the rest of the window: a fast attacker whose statistic recovers
            # before the next report must not hide the moment it crossed the threshold.
            if verdict is not None and (earlier is None or not earlier.get("alarm") or verdict.alarm):
                window.extraction[caller] = {
                    "model": model,
                    "queries": verdict.queries,
                    "distances": verdict.distances,
                    "w": None if verdict.w is None else round(verdict.w, 4),
                    "threshold": prada.settings.threshold,
                    "alarm": verdict.alarm,
                    "sample": ctx.request_id,
                }


def build(snapshot: MeshSnapshot, runtime: SidecarRuntime) -> Filter | None:
    """The detection filter of this generation (always: the default detectors need the counts)."""
    shared = detection_state(runtime)
    w = snapshot.workload
    detection = detection_for(
        snapshot.of_kind("DetectionPolicy"), w.namespace, w.labels, snapshot.mesh.root_namespace
    )
    shared.configure(detection)
    return DetectionFilter(shared, detection)


def _drain_handshakes(stats: Any, window: WindowAggregate) -> None:
    refused = getattr(stats, "tls_refused_sources", None)
    if not refused:
        return
    items = list(refused.items())
    refused.clear()
    for (address, reason), n in items:
        window.handshake_refused(address, reason, n)


async def _report_loop(shared: DetectionShared, stats: Any, post: ReportPost, interval: float) -> None:
    while True:
        await asyncio.sleep(interval)
        try:
            await _report_once(shared, stats, post)
        except Exception:  # a bug in one report must not end reporting for the process
            shared.failures += 1
            log.exception("detection: report failed")


async def _report_once(shared: DetectionShared, stats: Any, post: ReportPost) -> None:
    _drain_handshakes(stats, shared.window)
    if not shared.window.empty():
        window = shared.take()
        shared.pending.append(window.to_json(shared.workload, shared.version, time.time()))
        del shared.pending[:-MAX_PENDING]
    if not shared.pending:
        return
    batch = list(shared.pending)
    try:
        status, _ = await post(REPORT_PATH, {"reports": batch})
    except Exception as exc:  # the control plane is away: keep the reports
        shared.failures += 1
        log.debug("detection: report not delivered: %s", exc)
        return
    if 200 <= status < 300 or 400 <= status < 500:  # taken, or refused for good: drop
        del shared.pending[: len(batch)]
        if status >= 400:
            log.warning("detection: the control plane refused a report (HTTP %d)", status)


def start_detection_reporter(
    runtime: SidecarRuntime, stats: Any, post: ReportPost, interval: float | None = None
) -> asyncio.Task[None]:
    """Ship this sidecar's aggregates with ``post`` (on the running loop; once per process)."""
    shared = detection_state(runtime)
    if shared.task is None:
        every = interval or float(os.environ.get("MESHWARD_DETECTION_INTERVAL", "0.5"))
        shared.task = asyncio.get_running_loop().create_task(_report_loop(shared, stats, post, every))
    return shared.task


def stop_detection_reporter(runtime: SidecarRuntime) -> None:
    shared = detection_state(runtime)
    if shared.task is not None:
        shared.task.cancel()
        shared.task = None
