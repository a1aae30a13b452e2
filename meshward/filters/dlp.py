"""The DLP filter: inspect prompts on the way in and outputs on the way out.

Request direction (a policy with ``direction: request|both``): the filter asks for the whole
body, rewrites it (``ctx.body``, ``ctx.body_rewritten``) or refuses it with
``Denial(kind="dlp", 403)`` naming the policy — the body is then never forwarded.

Response direction: ``on_response_headers`` picks a mode from the content type —

- ``application/json``: buffered whole (bounded by ``maxBodyBytes``), rewritten JSON-aware and
  checked against ``maxRecords`` at the end;
- ``text/event-stream``: :class:`~meshward.dlp.stream.SseRewriter` (per-stream window);
- ``application/x-ndjson`` (Ollama): :class:`~meshward.dlp.stream.NdjsonRewriter` (the same,
  one JSON document per line);
- other text (or no content type): :class:`~meshward.dlp.stream.TextRewriter` — unless the
  body turns out to open a JSON object or array: clients parse it as JSON whatever the header
  says, so it is buffered and inspected decoded like declared JSON (text again if it does not
  parse or outgrows ``maxBodyBytes``);
- binary, compressed or too large: uninspectable, ``failMode`` decides;

and ``maxResponseBytes`` is checked against ``Content-Length`` and against the bytes seen.
A block, a fail-closed uninspectable body or an exceeded limit raises
:class:`~meshward.filters.base.ResponseDenied`: while no response byte has left (a
``Content-Length`` over ``maxResponseBytes``, a compressed body, a buffered JSON document with
more than ``maxRecords`` records or with blocked data) the caller gets a 403 naming the policy
instead of the response (``Denial`` kind ``export`` for limits, ``dlp`` otherwise). Once a
stream has started (SSE, text) it is cut instead: an SSE stream gets a final
``data: {"error": ...}`` event, text an error line. The offending bytes are never released.

Telemetry and audit read ``ctx.findings`` (detector → count, never values) and
``ctx.scratch["dlp"]`` (``uninspectable``, ``fail_open``, ``blocked``, ``export_limit``).
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from meshward.authz.engine import select_policies
from meshward.config.snapshot import MeshSnapshot
from meshward.dlp.body import (
    Uninspectable,
    body_kind,
    check_encoding,
    count_records,
    inspect_body,
    inspect_json,
)
from meshward.dlp.decode import json_start
from meshward.dlp.policy import Direction, DlpPlan, compile_plans
from meshward.dlp.redact import Outcome, Redactor, inspect_text
from meshward.dlp.stream import NdjsonRewriter, SseRewriter, StreamBlocked, TextRewriter
from meshward.filters.base import (
    Denial,
    Filter,
    RequestContext,
    ResponseDenied,
    SidecarRuntime,
)
from meshward.resources.dataprotection import DataProtectionPolicy

__all__ = ["DlpFilter", "build", "hash_key", "selected_policies"]

_KEY_FILE = "dlp-hash.key"


def selected_policies(snapshot: MeshSnapshot) -> list[DataProtectionPolicy]:
    """The policies of the workload's namespace (or the root one) whose selector matches it."""
    return select_policies(
        snapshot.of_kind(DataProtectionPolicy.kind_name),
        snapshot.workload,
        snapshot.mesh.root_namespace,
        DataProtectionPolicy,
    )


class _HashKey:
    """The process's key for ``hash`` tags (its one :class:`SidecarRuntime` service of this type;
    a holder, not a ``bytes`` subclass: compiled classes cannot inherit from builtins)."""

    __slots__ = ("key",)

    def __init__(self, key: bytes) -> None:
        self.key = key


def hash_key(runtime: SidecarRuntime) -> bytes:
    """The sidecar's key for ``hash`` tags: kept across generations, on disk (0600) if it can be."""
    return runtime.service(_HashKey, lambda: _HashKey(_load_key(runtime.state_dir))).key


def _load_key(state_dir: Path | None) -> bytes:
    key = secrets.token_bytes(32)
    if state_dir is not None:
        path = Path(state_dir) / _KEY_FILE
        try:
            key = path.read_bytes()
        except FileNotFoundError:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(key)
    return key


def _header(headers: list[tuple[str, str]], name: str) -> str | None:
    for n, v in headers:
        if n.lower() == name:
            return v
    return None


@dataclass
class _Response:
    """Per-response state, kept in ``ctx.scratch``."""

    plan: DlpPlan
    kind: str
    outcome: Outcome
    rewriter: TextRewriter | SseRewriter | None = None  # an NdjsonRewriter is an SseRewriter
    buffered: list[bytes] = field(default_factory=list)
    size: int = 0
    passthrough: bool = False
    sniffing: bool = False  # a text body not yet known to be JSON or not
    sniffed: bool = False  # a text body found to open a JSON document: buffered as JSON


class DlpFilter(Filter):
    name = "dlp"
    eager_safe = True  # scans in place, never waits

    def __init__(self, plans: dict[Direction, DlpPlan], redactor: Redactor) -> None:
        self.request_plan = plans.get("request")
        self.response_plan = plans.get("response")
        self.redactor = redactor

    # ---- request ----------------------------------------------------------------------------

    def wants_request_body(self, ctx: RequestContext) -> bool:
        return self.request_plan is not None

    async def on_request(self, ctx: RequestContext) -> Denial | None:
        plan = self.request_plan
        if plan is None or not ctx.body:
            return None
        outcome = Outcome(counts=ctx.findings)
        try:
            body = inspect_body(
                plan,
                self.redactor,
                ctx.body,
                ctx.headers.get("content-type"),
                ctx.headers.get("content-encoding"),
                outcome,
            )
        except Uninspectable as exc:
            _note(ctx)["uninspectable"] = str(exc)
            if plan.fail_closed:
                return Denial(
                    "dlp",
                    403,
                    f"request body cannot be inspected ({exc}); refused by data protection policy {plan.fail_policy}",
                    policy=plan.fail_policy,
                    body={"policy": plan.fail_policy, "reason": "uninspectable"},
                )
            _fail_open(ctx, plan)
            return None
        if outcome.blocked_by is not None:
            _note(ctx)["blocked"] = outcome.blocked_by
            return Denial(
                "dlp",
                403,
                f"request blocked by data protection policy {outcome.blocked_by}: "
                f"sensitive data ({outcome.blocked_detector})",
                policy=outcome.blocked_by,
                body={
                    "policy": outcome.blocked_by,
                    "detector": outcome.blocked_detector,
                    "reason": "blocked",
                },
            )
        if outcome.changed:
            ctx.body = body
            ctx.body_rewritten = True
        return None

    # ---- response ---------------------------------------------------------------------------

    def on_response_headers(self, ctx: RequestContext, status: int, headers: list[tuple[str, str]]) -> bool:
        plan = self.response_plan
        if plan is None:
            return False
        kind = body_kind(_header(headers, "content-type"))
        state = _Response(plan, kind, Outcome(counts=ctx.findings))
        ctx.scratch["dlp.response"] = state
        length = _header(headers, "content-length")
        limit = plan.max_response_bytes
        if (
            limit is not None
            and length is not None
            and length.strip().isdigit()
            and int(length) > limit.value
        ):
            raise _export_abort(ctx, state, limit.policy, "maxResponseBytes")  # before any byte
        try:
            check_encoding(_header(headers, "content-encoding"))
            if kind == "binary" and plan.scans:
                raise Uninspectable("binary response cannot be inspected")
        except Uninspectable as exc:
            _note(ctx)["uninspectable"] = str(exc)
            if plan.fail_closed:
                raise _abort(ctx, state, plan.fail_policy, "uninspectable", str(exc)) from None
            _fail_open(ctx, plan)
            state.passthrough = True
            return limit is not None
        if kind == "sse":
            state.rewriter = SseRewriter(plan, self.redactor, state.outcome)
        elif kind == "ndjson":
            state.rewriter = NdjsonRewriter(plan, self.redactor, state.outcome)
        elif kind == "text":
            state.sniffing = True
        elif kind == "binary":
            state.passthrough = True
        return True

    def on_response_chunk(self, ctx: RequestContext, chunk: bytes) -> bytes:
        state: _Response | None = ctx.scratch.get("dlp.response")
        if state is None:
            return chunk
        state.size += len(chunk)
        plan = state.plan
        limit = plan.max_response_bytes
        if limit is not None and state.size > limit.value:
            raise _export_abort(ctx, state, limit.policy, "maxResponseBytes")
        if state.passthrough:
            return chunk
        if state.sniffing:
            state.buffered.append(chunk)
            prefix = b"".join(state.buffered)
            is_json = json_start(prefix)
            if is_json is None:
                return b""
            state.sniffing, state.buffered = False, [] if not is_json else [prefix]
            if is_json:
                state.kind, state.sniffed = "json", True
                return self._buffer_json(ctx, state, b"")
            state.rewriter = TextRewriter(plan, self.redactor, state.outcome)
            chunk = prefix
        if state.rewriter is not None:
            try:
                return state.rewriter.feed(chunk)
            except StreamBlocked as exc:
                raise _abort(ctx, state, exc.policy, "blocked", f"sensitive data ({exc.detector})") from None
        return self._buffer_json(ctx, state, chunk)

    def _text_at_end(self, ctx: RequestContext, state: _Response, body: bytes) -> bytes:
        """A buffered text body (it only looked like JSON): inspected whole as text."""
        state.kind = "text"
        new = inspect_text(state.plan, self.redactor, body, state.outcome)
        blocked = state.outcome.blocked_by
        if blocked is not None:
            raise _abort(ctx, state, blocked, "blocked", f"sensitive data ({state.outcome.blocked_detector})")
        return new

    def _buffer_json(self, ctx: RequestContext, state: _Response, chunk: bytes) -> bytes:
        """JSON: buffered whole, bounded (a sniffed one goes back to text when too large)."""
        plan = state.plan
        if chunk:
            state.buffered.append(chunk)
        if state.size > plan.max_body_bytes.value and state.sniffed:
            state.kind, state.sniffed = "text", False
            state.rewriter = TextRewriter(plan, self.redactor, state.outcome)
            held, state.buffered = b"".join(state.buffered), []
            try:
                return state.rewriter.feed(held)
            except StreamBlocked as exc:
                raise _abort(ctx, state, exc.policy, "blocked", f"sensitive data ({exc.detector})") from None
        if state.size > plan.max_body_bytes.value:
            _note(ctx)["uninspectable"] = "response larger than maxBodyBytes"
            if plan.fail_closed:
                raise _abort(ctx, state, plan.fail_policy, "uninspectable", "response too large to inspect")
            _fail_open(ctx, plan)
            state.passthrough = True
            held, state.buffered = b"".join(state.buffered), []
            return held
        return b""

    def on_response_end(self, ctx: RequestContext) -> bytes:
        state: _Response | None = ctx.scratch.get("dlp.response")
        if state is None:
            return b""
        if state.passthrough:
            return b""
        if state.rewriter is not None:
            try:
                return state.rewriter.finish()
            except StreamBlocked as exc:
                raise _abort(ctx, state, exc.policy, "blocked", f"sensitive data ({exc.detector})") from None
        body, state.buffered = b"".join(state.buffered), []
        if not body.strip():
            return body
        plan = state.plan
        if state.sniffing:  # too short to tell: text
            return self._text_at_end(ctx, state, body)
        try:
            new, doc = inspect_json(plan, self.redactor, body, state.outcome)
        except Uninspectable as exc:
            if state.sniffed:  # looked like JSON, is not: inspected as the text it is
                return self._text_at_end(ctx, state, body)
            _note(ctx)["uninspectable"] = str(exc)
            if plan.fail_closed:
                raise _abort(ctx, state, plan.fail_policy, "uninspectable", str(exc)) from None
            _fail_open(ctx, plan)
            return (
                inspect_text(plan, self.redactor, body, state.outcome)
                if not state.outcome.blocked_by
                else b""
            )
        records = plan.max_records
        if records is not None and count_records(doc) > records.value:
            raise _export_abort(ctx, state, records.policy, "maxRecords")
        if state.outcome.blocked_by is not None:
            raise _abort(
                ctx,
                state,
                state.outcome.blocked_by,
                "blocked",
                f"sensitive data ({state.outcome.blocked_detector})",
            )
        return new


def _note(ctx: RequestContext) -> dict[str, Any]:
    note: dict[str, Any] = ctx.scratch.setdefault("dlp", {})
    return note


def _fail_open(ctx: RequestContext, plan: DlpPlan) -> None:
    _note(ctx)["fail_open"] = plan.fail_policy
    ctx.audit_marks.append(f"dlp-fail-open:{plan.fail_policy}")


def _export_abort(ctx: RequestContext, state: _Response, policy: str, limit: str) -> ResponseDenied:
    _note(ctx)["export_limit"] = f"{policy}:{limit}"
    return _abort(ctx, state, policy, "export_limit", f"export limit {limit} exceeded", limit)


def _abort(
    ctx: RequestContext, state: _Response, policy: str, reason: str, detail: str, rule: str | None = None
) -> ResponseDenied:
    """Refuse the response: a 403 naming the policy if nothing was sent yet, else cut it with a
    final error (SSE event, JSON document or text line) naming the policy."""
    if reason == "blocked":
        _note(ctx)["blocked"] = policy
    ctx.decision = "deny"
    ctx.policy = policy
    ctx.rule = rule
    message = f"response stopped by data protection policy {policy}: {detail}"
    extra: dict[str, Any] = {"policy": policy, "reason": reason}
    if rule is not None:
        extra["limit"] = rule
    denial = Denial(
        "export" if reason == "export_limit" else "dlp",
        403,
        message,
        policy=policy,
        rule=rule,
        body=extra,
    )
    error = {"error": {"message": message, "type": f"dlp_{reason}", "code": 403, "policy": policy}}
    if state.kind == "sse":
        tail = b"data: " + json.dumps(error, separators=(",", ":")).encode() + b"\n\n"
    elif state.kind == "json":
        tail = json.dumps(error, separators=(",", ":")).encode()
    elif state.kind == "ndjson":
        tail = json.dumps(error, separators=(",", ":")).encode() + b"\n"
    elif state.kind == "text":
        tail = f"\n[{message}]\n".encode()
    else:
        tail = b""
    return ResponseDenied(denial, tail, f"dlp {reason}: {policy}")


def build(snapshot: MeshSnapshot, runtime: SidecarRuntime) -> Filter | None:
    """The DLP filter for this generation, or None when no DataProtectionPolicy applies."""
    policies = selected_policies(snapshot)
    if not policies:
        return None
    return DlpFilter(compile_plans(policies), Redactor(hash_key(runtime)))
