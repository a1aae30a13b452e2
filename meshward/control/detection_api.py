"""The detection endpoints of the control plane's API (routing only; the engine decides).

=================================== =========================================== ===============
``POST /v1/detection/report``       a sidecar's reports (``{"reports": [...]}``) that workload
``GET  /v1/detection/metrics``      Prometheus text: alerts, state sizes        operator
``GET  /v1/alerts``                 ``since``, ``subject`` → alerts, newest 1st operator
``GET  /v1/alerts/show``            ``id`` → one alert                          operator
``POST /v1/alerts/ack``             ``{"id"}`` → the acknowledged alert         operator
``GET  /v1/quarantines``            every quarantine                            operator
``POST /v1/quarantines/release``    ``{"id"}`` (quarantine or alert id)         operator
=================================== =========================================== ===============
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from meshward.control.service import ApiError
from meshward.detection.engine import DetectionEngine, DetectionRefused
from meshward.identity.spiffe import SpiffeId

__all__ = ["detection_api"]


def _id(body: dict[str, Any] | dict[str, str]) -> str:
    value = body.get("id")
    if not isinstance(value, str) or not value:
        raise ApiError(400, "'id' (a non-empty string) is required")
    return value


def detection_api(
    engine: DetectionEngine,
    method: str,
    path: str,
    body: dict[str, Any],
    query: dict[str, str],
    peer: Callable[[], SpiffeId],
    operator: Callable[[], str],
) -> dict[str, Any]:
    try:
        if (method, path) == ("POST", "/v1/detection/report"):
            return engine.ingest(body, peer())
        who = operator()
        match (method, path):
            case ("GET", "/v1/detection/metrics"):
                return {"text": engine.metrics_text()}
            case ("GET", "/v1/alerts"):
                return engine.list_alerts(query)
            case ("GET", "/v1/alerts/show"):
                return engine.show(_id(query))
            case ("POST", "/v1/alerts/ack"):
                return engine.ack(_id(body), who)
            case ("GET", "/v1/quarantines"):
                return engine.list_quarantines()
            case ("POST", "/v1/quarantines/release"):
                return engine.release(_id(body), who)
    except DetectionRefused as exc:
        raise ApiError(exc.status, str(exc)) from None
    raise ApiError(404, f"no endpoint {method} {path}")
