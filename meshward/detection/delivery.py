"""Where alerts go: the audit trail (an OCSF Detection Finding) and webhooks (JSON or Slack).

- :func:`detection_finding`: an alert as an OCSF 1.3 *Detection Finding* (class_uid 2004,
  category Findings): ``finding_info`` (uid = the alert id, title, the detector as analytic),
  severity, status, the subject in ``resources`` and the evidence in ``evidences``. The control
  plane records it in its own audit chain, so the Mesh's SIEM sinks (syslog, file, HTTP) forward
  it like every audit record.
- :func:`webhook_payload`: the alert as JSON, or, for ``format: slack``, a Slack-compatible
  ``{"text": ...}`` message (Slack, Mattermost and most chat webhooks accept it).
- :func:`post_webhook`: one POST; True on 2xx. The outbox (:mod:`meshward.detection.store`)
  retries the rest with backoff.
"""

from __future__ import annotations

from typing import Any

import httpx

from meshward.audit.ocsf import OCSF_VERSION, PRODUCT
from meshward.detection.signals import Alert

__all__ = ["SEVERITY_ID", "detection_finding", "post_webhook", "webhook_payload"]

SEVERITY_ID = {"low": 2, "medium": 3, "high": 4, "critical": 5}
_STATUS = {"open": (1, "New"), "acknowledged": (2, "In Progress"), "resolved": (4, "Resolved")}
_ACTIVITY = {"create": (1, "Create"), "update": (2, "Update"), "close": (3, "Close")}


def _resource_type(subject: str) -> str:
    if subject.startswith("spiffe://"):
        return "Identity"
    if subject.startswith("address:"):
        return "Network Address"
    if subject.startswith(("model:", "workload:")):
        return "Model"
    return "Other"


def detection_finding(alert: Alert, time_ms: int, activity: str = "create") -> dict[str, Any]:
    """The OCSF Detection Finding (2004) for ``alert``."""
    activity_id, activity_name = _ACTIVITY[activity]
    status_id, status = _STATUS.get(alert.state, (99, alert.state))
    event: dict[str, Any] = {
        "class_uid": 2004,
        "class_name": "Detection Finding",
        "category_uid": 2,
        "category_name": "Findings",
        "activity_id": activity_id,
        "activity_name": activity_name,
        "type_uid": 2004 * 100 + activity_id,
        "time": time_ms,
        "severity_id": SEVERITY_ID.get(alert.severity, 0),
        "severity": alert.severity.capitalize(),
        "status_id": status_id,
        "status": status,
        "message": alert.summary,
        "finding_info": {
            "uid": alert.id,
            "title": alert.summary,
            "types": [alert.detector],
            "analytic": {"name": alert.detector, "type_id": 1, "type": "Rule"},
            "first_seen_time_dt": alert.time,
            "last_seen_time_dt": alert.updated,
        },
        "resources": [{"name": alert.subject, "type": _resource_type(alert.subject)}],
        "evidences": [{"data": alert.evidence}],
        "count": alert.count,
        "metadata": {"version": OCSF_VERSION, "product": PRODUCT, "log_name": "detection"},
        "unmapped": {
            "meshward": {
                "alert_id": alert.id,
                "detector": alert.detector,
                "subject": alert.subject,
                "workload": alert.workload,
                "policy": alert.policy,
                "response": alert.response,
            }
        },
    }
    return event


def webhook_payload(alert: Alert, fmt: str) -> dict[str, Any]:
    if fmt == "slack":
        text = (
            f"[{alert.severity.upper()}] {alert.detector} alert {alert.id}: {alert.summary} "
            f"(subject {alert.subject}, seen {alert.count}x"
            + (f", {alert.response}" if alert.response else "")
            + f"). `meshward alerts show {alert.id}`"
        )
        return {"text": text}
    return alert.to_json()


def post_webhook(url: str, payload: dict[str, Any], timeout: float = 5.0) -> bool:
    """POST one alert; True if the receiver answered 2xx."""
    try:
        response = httpx.post(url, json=payload, timeout=timeout, trust_env=False)
    except httpx.HTTPError:
        return False
    return response.is_success
