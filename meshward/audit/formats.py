"""Export formats for stored audit records: OCSF JSON, ArcSight CEF, syslog RFC 5424 (pure).

Every exported record keeps its provenance (source identity, chain, sequence number, hash)
so a SIEM copy can be matched back to the signed trail: under ``unmapped.meshward_audit`` in
OCSF, as ``cn1``/``cs5``/``cs6`` in CEF, and in the ``meshward@32473`` structured-data element in
syslog (32473 is the private enterprise number RFC 5612 reserves for documentation; replace
it with your own if your SIEM keys on it).
"""

from __future__ import annotations

import datetime as dt
import json
import socket
from typing import Any

from meshward import __version__
from meshward.audit.chain import AuditRecord
from meshward.audit.ocsf import as_int, enrich

__all__ = ["FORMATS", "to_cef", "to_ocsf", "to_ocsf_json", "to_syslog"]

FORMATS = ("ocsf", "cef", "syslog")
_SD_ID = "meshward@32473"
_HOSTNAME = (socket.gethostname() or "-")[:255]


def to_ocsf(record: AuditRecord, source: str, chain: str) -> dict[str, Any]:
    event = enrich(record.event)
    found = event.get("unmapped")
    unmapped = dict(found) if isinstance(found, dict) else {}
    unmapped["meshward_audit"] = {
        "source": source,
        "chain": chain,
        "seq": record.seq,
        "hash": record.hash,
        "prev": record.prev,
    }
    event["unmapped"] = unmapped
    return event


def to_ocsf_json(record: AuditRecord, source: str, chain: str) -> str:
    return json.dumps(to_ocsf(record, source, chain), separators=(",", ":"), sort_keys=True)


# -- CEF --------------------------------------------------------------------------------------


def _cef_header(value: object) -> str:
    return str(value).replace("\\", "\\\\").replace("|", "\\|").replace("\r", " ").replace("\n", " ")


def _cef_ext(value: object) -> str:
    return str(value).replace("\\", "\\\\").replace("=", "\\=").replace("\r", "\\r").replace("\n", "\\n")


def _get(event: dict[str, Any], *path: str) -> Any:
    cur: Any = event
    for key in path:
        if not isinstance(cur, dict):
            return None
        cur = cur.get(key)
    return cur


def to_cef(record: AuditRecord, source: str, chain: str) -> str:
    """``CEF:0|Meshward|meshward|VERSION|TYPE_UID|NAME|SEVERITY|key=value ...``."""
    e = enrich(record.event)
    name = e.get("class_name", "event")
    if e.get("activity_name"):
        name = f"{name}: {e['activity_name']}"
    severity = {1: 1, 2: 3, 3: 5, 4: 7, 5: 9, 6: 10}.get(as_int(e.get("severity_id")), 0)
    ext: list[tuple[str, object]] = [("rt", e.get("time", 0))]
    fields: list[tuple[str, Any]] = [
        ("src", _get(e, "src_endpoint", "ip")),
        ("spt", _get(e, "src_endpoint", "port")),
        ("dhost", _get(e, "dst_endpoint", "hostname")),
        ("dpt", _get(e, "dst_endpoint", "port")),
        ("suser", _get(e, "actor", "user", "uid")),
        ("requestMethod", _get(e, "http_request", "http_method")),
        ("request", _get(e, "http_request", "url", "path")),
        ("act", e.get("action") or e.get("status")),
        ("outcome", _get(e, "http_response", "code")),
        ("externalId", _get(e, "metadata", "uid")),
        ("msg", e.get("message")),
    ]
    authz = e.get("authorizations")
    first = authz[0] if isinstance(authz, list) and authz else None
    policy = _get(first, "policy", "name") if isinstance(first, dict) else None
    found = _get(e, "unmapped", "meshward")
    mw = found if isinstance(found, dict) else {}
    mw = {"model": mw.get("model"), "ai_operation": mw.get("op")}
    fields += [
        ("cs1Label", "policy" if policy else None),
        ("cs1", policy),
        ("cs2Label", "model" if mw.get("model") else None),
        ("cs2", mw.get("model")),
        ("cs3Label", "aiOperation" if mw.get("ai_operation") else None),
        ("cs3", mw.get("ai_operation")),
        ("cs4Label", "operation" if _get(e, "api", "operation") else None),
        ("cs4", _get(e, "api", "operation")),
        ("cs5Label", "auditSource"),
        ("cs5", source),
        ("cs6Label", "auditChain"),
        ("cs6", f"{chain}:{record.hash}"),
        ("cn1Label", "auditSeq"),
        ("cn1", record.seq),
    ]
    ext += [(k, v) for k, v in fields if v is not None and v != "" and not isinstance(v, dict | list)]
    header = "|".join(
        _cef_header(v)
        for v in ("CEF:0", "Meshward", "meshward", __version__, as_int(e.get("type_uid")), name, severity)
    )
    return header + "|" + " ".join(f"{k}={_cef_ext(v)}" for k, v in ext)


# -- syslog (RFC 5424) ----------------------------------------------------------------------------

_FACILITY_LOG_AUDIT = 13
_SYSLOG_SEVERITY = {1: 6, 2: 5, 3: 4, 4: 3, 5: 2, 6: 1}  # OCSF severity_id -> syslog severity


def _sd_value(value: object) -> str:
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")


def to_syslog(record: AuditRecord, source: str, chain: str, app_name: str = "meshward") -> str:
    """One RFC 5424 message (no framing): header, structured data, the OCSF JSON as MSG."""
    e = enrich(record.event)
    severity = _SYSLOG_SEVERITY.get(as_int(e.get("severity_id"), 1), 6)
    pri = _FACILITY_LOG_AUDIT * 8 + severity
    millis = as_int(e.get("time"))
    try:
        when = dt.datetime.fromtimestamp(millis / 1000, dt.UTC)
    except (OverflowError, OSError, ValueError):  # a time no calendar has: the epoch, not a crash
        when = dt.datetime.fromtimestamp(0, dt.UTC)
    stamp = when.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    # MSGID: printable US-ASCII without spaces (RFC 5424 §6.2.7)
    msgid = (
        "".join(c for c in str(e.get("class_name", "audit")).replace(" ", "_") if "!" <= c <= "~")[:32] or "-"
    )
    sd = (
        f'[{_SD_ID} source="{_sd_value(source)}" chain="{_sd_value(chain)}" '
        f'seq="{record.seq}" hash="{record.hash}" type_uid="{as_int(e.get("type_uid"))}"]'
    )
    msg = json.dumps(e, separators=(",", ":"), sort_keys=True)
    return f"<{pri}>1 {stamp} {_HOSTNAME} {app_name} - {msgid} {sd} {msg}"
