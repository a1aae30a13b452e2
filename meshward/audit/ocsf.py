"""Audit events in OCSF form (schema 1.3): what happened, as plain dicts (pure, no I/O).

Classes used:

- HTTP Activity (4002, category Network Activity) — one request through a sidecar, with the
  authorization decision in ``authorizations``, the deciding policy, and AI facts (model,
  operation, tokens, DLP findings by type) under ``unmapped.meshward``;
- API Activity (6003, category Application Activity) — control-plane operations: a certificate
  issued (Create) or refused, a config generation applied (Update);
- Application Lifecycle (6002) — a sidecar or the control plane started (Start) or stopped (Stop).

``type_uid`` is ``class_uid * 100 + activity_id`` as OCSF defines it. No bodies, query strings,
headers or tokens are ever put in a record.
"""

from __future__ import annotations

from typing import Any

from meshward import __version__
from meshward.filters.base import RequestContext

__all__ = [
    "OCSF_VERSION",
    "PRODUCT",
    "api_activity",
    "application_lifecycle",
    "enrich",
    "http_activity",
    "is_security_relevant",
]

OCSF_VERSION = "1.3.0"
PRODUCT = {"name": "Meshward", "vendor_name": "Meshward", "version": __version__}

_HTTP_ACTIVITY = {
    "CONNECT": 1,
    "DELETE": 2,
    "GET": 3,
    "HEAD": 4,
    "OPTIONS": 5,
    "POST": 6,
    "PUT": 7,
    "TRACE": 8,
    "PATCH": 9,
}
_HTTP_ACTIVITY_NAME = {v: k.capitalize() for k, v in _HTTP_ACTIVITY.items()}
# severity_id: 1 Informational, 3 Medium
_SEVERITY_INFO, _SEVERITY_MEDIUM = 1, 3
# action_id: 1 Allowed, 2 Denied; disposition_id: 1 Allowed, 2 Blocked, 15 Detected, 17 Logged
_DECISION = {
    "allow": (1, "Allowed", 1, "Allowed", _SEVERITY_INFO),
    "deny": (2, "Denied", 2, "Blocked", _SEVERITY_MEDIUM),
    "dry_run_deny": (1, "Allowed", 15, "Detected", _SEVERITY_MEDIUM),
}


_BLOCKING_FLAGS = frozenset({"RBAC", "RL", "DLP"})  # local answers of authz, rate limits, DLP


def is_security_relevant(ctx: RequestContext) -> bool:
    """Anything but a plain allowed request: a deny, a dry-run deny, an AUDIT mark, a limit, DLP."""
    return bool(
        ctx.decision != "allow"
        or ctx.audit_marks
        or ctx.findings
        or ctx.response_status in (403, 429)
        or "dlp" in ctx.scratch
    )


def _metadata(uid: str | None, log_name: str, correlation_uid: str | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"version": OCSF_VERSION, "product": PRODUCT, "log_name": log_name}
    if uid:
        meta["uid"] = uid
    if correlation_uid:
        meta["correlation_uid"] = correlation_uid
    return meta


def http_activity(ctx: RequestContext, time_ms: int, duration_ms: int) -> dict[str, Any]:
    """One request as a lean OCSF HTTP Activity event (captions are added by :func:`enrich`).

    Written for every request when allowed requests are audited, so it carries ids, not their
    captions, and nothing the chain already says (the reporting sidecar is the chain's source).
    """
    activity_id = _HTTP_ACTIVITY.get(ctx.method, 99)
    decision = ctx.decision
    if ctx.response_flags in _BLOCKING_FLAGS:  # a rate limit or DLP answered, authz allowed
        decision = "deny"
    action_id, _, disposition_id, _, severity = _DECISION.get(
        decision, (2, "Denied", 2, "Blocked", _SEVERITY_MEDIUM)
    )
    status = ctx.response_status
    if ctx.findings or ctx.audit_marks:
        severity = _SEVERITY_MEDIUM
    peer = ctx.peer
    authorization: dict[str, Any] = {"decision": ctx.decision}
    if ctx.policy:
        authorization["policy"] = {"name": ctx.policy, "uid": ctx.rule or ""}
    reason = ctx.scratch.get("authz.reason")
    if isinstance(reason, str):
        authorization["reason"] = reason
    ai = ctx.ai
    meshward: dict[str, Any] = {"flags": ctx.response_flags, "op": ai.operation}
    if ai.model:
        meshward["model"] = ai.model
    if ctx.upstream_duration is not None:
        meshward["upstream_ms"] = int(ctx.upstream_duration * 1000)
    if ctx.tokens.total:
        meshward["tokens"] = [ctx.tokens.input, ctx.tokens.output, ctx.tokens.estimated]
    if ctx.findings:
        meshward["dlp_findings"] = dict(ctx.findings)
    if ctx.audit_marks:
        meshward["audit_marks"] = list(ctx.audit_marks)
    dlp = ctx.scratch.get("dlp")
    if dlp:
        notes = {k: str(dlp[k]) for k in ("blocked", "export_limit", "fail_open") if dlp.get(k)}
        if dlp.get("uninspectable"):
            notes["uninspectable"] = "true"
        meshward["dlp"] = notes
    if ctx.end_user is not None:  # the authenticated end user (JWT iss/sub or API key principal)
        meshward["end_user"] = {"principal": ctx.end_user.principal, "via": ctx.end_user.via}
    event: dict[str, Any] = {
        "class_uid": 4002,
        "category_uid": 4,
        "activity_id": activity_id,
        "type_uid": 400200 + activity_id,
        "time": time_ms,
        "duration": duration_ms,
        "severity_id": severity,
        "status_id": 1 if 0 < status < 400 else 2,
        "action_id": action_id,
        "disposition_id": disposition_id,
        "metadata": {"version": OCSF_VERSION, "uid": ctx.request_id},
        "actor": {"user": {"uid": peer.spiffe_id or ""}},
        "src_endpoint": {"ip": peer.ip, "port": peer.port},
        "http_request": {"http_method": ctx.method, "url": {"path": ctx.path, "hostname": ctx.host}},
        "http_response": {"code": status},
        "traffic": {"bytes_in": ctx.bytes_received, "bytes_out": ctx.bytes_sent},
        "authorizations": [authorization],
        "unmapped": {"meshward": meshward},
    }
    if ctx.trace_id:
        event["trace"] = {"uid": ctx.trace_id}
    return event


_CLASS_NAMES = {
    4002: ("HTTP Activity", "Network Activity"),
    6002: ("Application Lifecycle", "Application Activity"),
    6003: ("API Activity", "Application Activity"),
}
_ACTION = {1: "Allowed", 2: "Denied"}
_DISPOSITION = {1: "Allowed", 2: "Blocked", 15: "Detected", 17: "Logged"}


def as_int(value: object, default: int = 0) -> int:
    """``value`` if it is an integer (not a bool), else ``default``: exports never call ``int()``
    on what a sender wrote."""
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def enrich(event: dict[str, Any]) -> dict[str, Any]:
    """A copy with the captions OCSF consumers expect (class, category, activity, action,
    disposition names, the product) added; what exports send. Never raises on a JSON object."""
    out = dict(event)
    names = _CLASS_NAMES.get(as_int(out.get("class_uid")))
    if names:
        out.setdefault("class_name", names[0])
        out.setdefault("category_name", names[1])
    if out.get("class_uid") == 4002:
        out.setdefault("activity_name", _HTTP_ACTIVITY_NAME.get(as_int(out.get("activity_id")), "Other"))
        response = out.get("http_response")
        code = response.get("code") if isinstance(response, dict) else None
        if code is not None:
            out.setdefault("http_status", code)
    if "action_id" in out:
        out.setdefault("action", _ACTION.get(as_int(out["action_id"]), "Other"))
    if "disposition_id" in out:
        out.setdefault("disposition", _DISPOSITION.get(as_int(out["disposition_id"]), "Other"))
    metadata = out.get("metadata")
    meta = dict(metadata) if isinstance(metadata, dict) else {}
    meta.setdefault("product", PRODUCT)
    out["metadata"] = meta
    return out


def api_activity(
    operation: str,
    *,
    activity: str,
    actor: str,
    time_ms: int,
    success: bool,
    resource: dict[str, Any] | None = None,
    message: str = "",
    src_ip: str | None = None,
) -> dict[str, Any]:
    """A control-plane operation; ``activity`` is create | read | update | delete."""
    activity_id = {"create": 1, "read": 2, "update": 3, "delete": 4}.get(activity, 99)
    event: dict[str, Any] = {
        "class_uid": 6003,
        "class_name": "API Activity",
        "category_uid": 6,
        "category_name": "Application Activity",
        "activity_id": activity_id,
        "activity_name": activity.capitalize(),
        "type_uid": 600300 + activity_id,
        "time": time_ms,
        "severity_id": _SEVERITY_INFO if success else _SEVERITY_MEDIUM,
        "status_id": 1 if success else 2,
        "status": "Success" if success else "Failure",
        "metadata": _metadata(None, "control"),
        "actor": {"user": {"uid": actor, "type_id": 99}},
        "api": {"operation": operation, "service": {"name": "meshward-control"}},
        "src_endpoint": {"ip": src_ip} if src_ip else {},
        "resources": [resource] if resource else [],
    }
    if message:
        event["message"] = message
    return event


def application_lifecycle(
    app: str, identity: str, *, started: bool, time_ms: int, message: str = ""
) -> dict[str, Any]:
    """A sidecar (or the control plane) started or stopped."""
    activity_id = 3 if started else 4
    event: dict[str, Any] = {
        "class_uid": 6002,
        "class_name": "Application Lifecycle",
        "category_uid": 6,
        "category_name": "Application Activity",
        "activity_id": activity_id,
        "activity_name": "Start" if started else "Stop",
        "type_uid": 600200 + activity_id,
        "time": time_ms,
        "severity_id": _SEVERITY_INFO,
        "status_id": 1,
        "metadata": _metadata(None, "lifecycle"),
        "app": {"name": app, "uid": identity, "vendor_name": "Meshward", "version": __version__},
    }
    if message:
        event["message"] = message
    return event
