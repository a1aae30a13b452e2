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


def http_activity(ctx: RequestContext, reporter: str, time_ms: int, duration_ms: int) -> dict[str, Any]:
    """One request as an OCSF HTTP Activity event; ``reporter`` is the sidecar's SPIFFE ID."""
    activity_id = _HTTP_ACTIVITY.get(ctx.method, 99)
    action_id, action, disposition_id, disposition, severity = _DECISION.get(
        ctx.decision, (2, "Denied", 2, "Blocked", _SEVERITY_MEDIUM)
    )
    status = ctx.response_status
    if ctx.findings or ctx.audit_marks:
        severity = max(severity, _SEVERITY_MEDIUM)
    peer = ctx.peer
    authorization: dict[str, Any] = {"decision": ctx.decision}
    if ctx.policy:
        authorization["policy"] = {"name": ctx.policy, "uid": ctx.rule or ""}
    ai = ctx.ai
    meshward: dict[str, Any] = {
        "reporter": reporter,
        "direction": ctx.direction,
        "response_flags": ctx.response_flags,
        "model": ai.model,
        "ai_operation": ai.operation,
        "ai_protocol": ai.protocol,
    }
    if ctx.tokens.total:
        meshward["tokens"] = {
            "input": ctx.tokens.input,
            "output": ctx.tokens.output,
            "estimated": ctx.tokens.estimated,
        }
    if ctx.findings:
        meshward["dlp_findings"] = dict(ctx.findings)
    if ctx.audit_marks:
        meshward["audit_marks"] = list(ctx.audit_marks)
    dlp = ctx.scratch.get("dlp")
    if dlp:
        meshward["dlp"] = {k: str(dlp[k]) for k in ("blocked", "export_limit", "fail_open") if dlp.get(k)}
        if dlp.get("uninspectable"):
            meshward["dlp"]["uninspectable"] = True
    reason = ctx.scratch.get("authz.reason")
    if isinstance(reason, str):
        authorization["reason"] = reason
    if ctx.upstream_duration is not None:
        meshward["upstream_duration_ms"] = round(ctx.upstream_duration * 1000, 3)
    event: dict[str, Any] = {
        "class_uid": 4002,
        "class_name": "HTTP Activity",
        "category_uid": 4,
        "category_name": "Network Activity",
        "activity_id": activity_id,
        "activity_name": _HTTP_ACTIVITY_NAME.get(activity_id, "Other"),
        "type_uid": 400200 + activity_id,
        "time": time_ms,
        "duration": duration_ms,
        "severity_id": severity,
        "status_id": 1 if 0 < status < 400 else 2,
        "action_id": action_id,
        "action": action,
        "disposition_id": disposition_id,
        "disposition": disposition,
        "metadata": _metadata(ctx.request_id, "http", ctx.trace_id),
        "actor": {"user": {"uid": peer.spiffe_id or "", "name": peer.principal or "", "type_id": 99}},
        "src_endpoint": {"ip": peer.ip, "port": peer.port},
        "dst_endpoint": {"hostname": ctx.host, "port": ctx.destination_port},
        "http_request": {
            "http_method": ctx.method,
            "uid": ctx.request_id,
            "url": {"path": ctx.path, "hostname": ctx.host, "port": ctx.destination_port},
        },
        "http_response": {"code": status},
        "http_status": status,
        "traffic": {"bytes_in": ctx.bytes_received, "bytes_out": ctx.bytes_sent},
        "authorizations": [authorization],
        "unmapped": {"meshward": meshward},
    }
    if ctx.trace_id:
        event["trace"] = {"uid": ctx.trace_id}
    return event


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
