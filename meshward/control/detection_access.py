"""The operator's detection operations, through the running control plane or on the state files.

Like :mod:`meshward.control.operations`: with a control plane running, every call goes through
its API (so a release reaches the sidecars at once and is audited there); without one, alerts are
read from ``<state>/detection.db`` and a release writes the config store directly (the next
control plane serves that generation).
"""

from __future__ import annotations

import urllib.parse
from typing import Any

from meshward.control.client import ControlClient, ControlRefused, ControlUnavailable, operator_client
from meshward.identity.state import MeshState

__all__ = ["DetectionAccess", "DetectionAccessError", "detection_access"]


class DetectionAccessError(Exception):
    """The operation failed; the message says why (for one line on stderr)."""


class DetectionAccess:
    def __init__(self, state: MeshState) -> None:
        self.state = state
        self.client: ControlClient | None = operator_client(state)

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        assert self.client is not None
        try:
            from meshward.control.operations import _user

            with self.client as client:
                return client.request(method, path, body, headers={"X-Meshward-User": _user()})[1]
        except ControlRefused as exc:
            raise DetectionAccessError(str(exc)) from None
        except ControlUnavailable as exc:
            raise DetectionAccessError(str(exc)) from None

    def _engine(self) -> Any:
        from meshward.config.store import ConfigStore
        from meshward.detection.engine import DetectionEngine

        store = ConfigStore(self.state.db_path, self.state.trust_domain)
        return DetectionEngine(
            self.state.path,
            store,
            self.state.trust_domain,
            store.resources,
            lambda e: None,
            lambda r, w: None,
        )

    def _local(self, operation: str, *args: Any) -> dict[str, Any]:
        from meshward.detection.engine import DetectionRefused

        try:
            result: dict[str, Any] = getattr(self._engine(), operation)(*args)
        except DetectionRefused as exc:
            raise DetectionAccessError(str(exc)) from None
        return result

    def alerts(self, subject: str | None = None, since: float | None = None) -> list[dict[str, Any]]:
        query = {k: str(v) for k, v in (("subject", subject), ("since", since)) if v is not None}
        if self.client is not None:
            answer = self._call("GET", "/v1/alerts?" + urllib.parse.urlencode(query))
        else:
            answer = self._local("list_alerts", query)
        alerts = answer.get("alerts", [])
        return alerts if isinstance(alerts, list) else []

    def show(self, alert_id: str) -> dict[str, Any]:
        if self.client is not None:
            return self._call("GET", "/v1/alerts/show?" + urllib.parse.urlencode({"id": alert_id}))
        return self._local("show", alert_id)

    def ack(self, alert_id: str, who: str) -> dict[str, Any]:
        if self.client is not None:
            return self._call("POST", "/v1/alerts/ack", {"id": alert_id})
        return self._local("ack", alert_id, who)

    def quarantines(self) -> list[dict[str, Any]]:
        if self.client is not None:
            answer = self._call("GET", "/v1/quarantines")
        else:
            answer = self._local("list_quarantines")
        found = answer.get("quarantines", [])
        return found if isinstance(found, list) else []

    def release(self, quarantine_id: str, who: str) -> dict[str, Any]:
        if self.client is not None:
            return self._call("POST", "/v1/quarantines/release", {"id": quarantine_id})
        return self._local("release", quarantine_id, who)


def detection_access(state: MeshState) -> DetectionAccess:
    return DetectionAccess(state)
