"""The sidecar's per-window aggregates: what detection ships to the control plane (pure).

Per caller (SPIFFE ID, or ``address:IP`` for plaintext): requests, server errors, denials (and
which kind), DLP findings in responses, export-limit hits, body bytes, LLM tokens, up to
``MAX_DISTINCT`` distinct paths and models, up to three sample request ids. Per source address:
refused TLS handshakes by reason. Per model (and version): a histogram of outputs, latency, errors.
Per caller of an LLM (extraction on): prompts, distinct prompts and the largest group sharing a
template prefix, from hashes.
No body and no prompt leaves the sidecar: only counts, paths, model names and request ids.

Cost: a few dict operations per request (see ``bench/detection.py``: well under 10 µs).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["MAX_CALLERS", "MAX_DISTINCT", "CallerWindow", "ModelWindow", "PromptWindow", "WindowAggregate"]

MAX_DISTINCT = 64  # distinct paths / models kept per caller and window
MAX_CALLERS = 4096  # callers per window (more: counted under "other")
MAX_SAMPLES = 3
PREFIX_CHARS = 32  # a prompt's "template": its first characters


@dataclass(slots=True)
class CallerWindow:
    requests: int = 0
    errors: int = 0
    denials: int = 0
    authz_denials: int = 0
    limited: int = 0
    dlp_blocks: int = 0
    export_hits: int = 0
    findings_out: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    tokens: int = 0
    paths: set[str] = field(default_factory=set)
    models: set[str] = field(default_factory=set)
    samples: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "errors": self.errors,
            "denials": self.denials,
            "authz_denials": self.authz_denials,
            "limited": self.limited,
            "dlp_blocks": self.dlp_blocks,
            "export_hits": self.export_hits,
            "findings_out": self.findings_out,
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
            "tokens": self.tokens,
            "paths": sorted(self.paths),
            "models": sorted(self.models),
            "samples": self.samples,
        }


@dataclass(slots=True)
class ModelWindow:
    outputs: dict[str, int] = field(default_factory=dict)  # output bucket → count
    requests: int = 0
    errors: int = 0
    latency_sum: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "outputs": self.outputs,
            "requests": self.requests,
            "errors": self.errors,
            "latency_sum": round(self.latency_sum, 6),
        }


@dataclass(slots=True)
class PromptWindow:
    """One caller's LLM prompts in a window: counts and hashes only, never the text."""

    prompts: int = 0
    distinct: set[int] = field(default_factory=set)
    prefixes: dict[int, int] = field(default_factory=dict)

    def add(self, text: str) -> None:
        self.prompts += 1
        if len(self.distinct) < 1024:
            self.distinct.add(hash(text))
        key = hash(text[:PREFIX_CHARS])
        if key in self.prefixes or len(self.prefixes) < 1024:
            self.prefixes[key] = self.prefixes.get(key, 0) + 1

    def to_json(self) -> dict[str, int]:
        return {
            "prompts": self.prompts,
            "distinct": len(self.distinct),
            "top_prefix": max(self.prefixes.values(), default=0),
        }


@dataclass
class WindowAggregate:
    """Everything since the last successful report (merged while the control plane is away)."""

    start: float
    callers: dict[str, CallerWindow] = field(default_factory=dict)
    handshakes: dict[str, dict[str, int]] = field(default_factory=dict)
    models: dict[str, ModelWindow] = field(default_factory=dict)
    extraction: dict[str, dict[str, Any]] = field(default_factory=dict)
    prompts: dict[str, PromptWindow] = field(default_factory=dict)

    def prompt(self, caller: str, text: str) -> None:
        window = self.prompts.get(caller)
        if window is None:
            if len(self.prompts) >= MAX_CALLERS:
                return
            window = self.prompts[caller] = PromptWindow()
        window.add(text)

    def caller(self, key: str) -> CallerWindow:
        window = self.callers.get(key)
        if window is None:
            if len(self.callers) >= MAX_CALLERS:
                key = "other"
                window = self.callers.get(key)
            if window is None:
                window = self.callers[key] = CallerWindow()
        return window

    def request(
        self,
        caller: str,
        request_id: str,
        status: int,
        decision: str,
        path: str,
        model: str | None,
        bytes_in: int,
        bytes_out: int,
        tokens: int,
        findings_out: int,
        dlp_blocked: bool,
        export_hit: bool,
    ) -> CallerWindow:
        """Count one finished request."""
        w = self.caller(caller)
        w.requests += 1
        w.bytes_in += bytes_in
        w.bytes_out += bytes_out
        w.tokens += tokens
        if status >= 500:
            w.errors += 1
        if decision == "deny":
            w.denials += 1
            if status == 429:
                w.limited += 1
            elif dlp_blocked:
                w.dlp_blocks += 1
            elif status == 403 and not export_hit:
                w.authz_denials += 1
            if len(w.samples) < MAX_SAMPLES:
                w.samples.append(request_id)
        if export_hit:
            w.export_hits += 1
        if findings_out:
            w.findings_out += findings_out
            if decision != "deny" and len(w.samples) < MAX_SAMPLES:
                w.samples.append(request_id)
        if len(w.paths) < MAX_DISTINCT:
            w.paths.add(path[:256])
        if model is not None and len(w.models) < MAX_DISTINCT:
            w.models.add(model[:128])
        return w

    def handshake_refused(self, address: str, reason: str, count: int = 1) -> None:
        reasons = self.handshakes.get(address)
        if reasons is None:
            if len(self.handshakes) >= MAX_CALLERS:
                return
            reasons = self.handshakes[address] = {}
        reasons[reason] = reasons.get(reason, 0) + count

    def model(self, key: str) -> ModelWindow:
        window = self.models.get(key)
        if window is None:
            window = self.models[key] = ModelWindow()
        return window

    def empty(self) -> bool:
        return not (self.callers or self.handshakes or self.models or self.extraction or self.prompts)

    def to_json(self, workload: str, version: str | None, end: float) -> dict[str, Any]:
        return {
            "workload": workload,
            "version": version,
            "window": [round(self.start, 3), round(end, 3)],
            "callers": {k: v.to_json() for k, v in self.callers.items()},
            "handshakes": self.handshakes,
            "models": {k: v.to_json() for k, v in self.models.items()},
            "extraction": self.extraction,
            "prompts": {k: v.to_json() for k, v in self.prompts.items()},
        }
