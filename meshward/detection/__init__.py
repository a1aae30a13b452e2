"""Threat detection and alerting: see attacks on the models as they happen, and answer them.

Data plane (in each inbound sidecar):

- :mod:`~meshward.detection.aggregate` per-window counts per caller, refused handshakes, outputs;
- :mod:`~meshward.detection.prada` PRADA model-extraction detection on OIP v2 inputs;
- :mod:`~meshward.detection.filter` the chain filter and the reporter to the control plane.

Control plane:

- :mod:`~meshward.detection.settings` DetectionPolicies over the defaults, per workload;
- :mod:`~meshward.detection.detectors` the detectors: reports and ``now`` in, signals out (pure);
- :mod:`~meshward.detection.stats` EWMA + MAD baselines, Shapiro–Wilk's W, the PSI (pure);
- :mod:`~meshward.detection.engine` correlation, alerts, delivery, quarantine;
- :mod:`~meshward.detection.store` alerts, quarantines and the outbox in SQLite;
- :mod:`~meshward.detection.delivery` the OCSF Detection Finding and webhook payloads;
- :mod:`~meshward.control.detection_access` the CLI's path to all of it (``meshward alerts``,
  ``meshward quarantine``).

For other components: :func:`alerts_for_subject` (e.g. a rollout reading the alerts about a
canary's model version).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from meshward.detection.engine import alerts_for_subject
    from meshward.detection.signals import Alert
    from meshward.detection.store import DetectionStore

__all__ = ["Alert", "DetectionStore", "alerts_for_subject"]

_LAZY = {
    "Alert": "meshward.detection.signals",
    "DetectionStore": "meshward.detection.store",
    "alerts_for_subject": "meshward.detection.engine",
}


def __getattr__(name: str) -> Any:
    """Imported on first use: the sidecar imports this package for its filter alone, and must not
    load the control plane's side (SQLite, YAML) with it."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(name)
