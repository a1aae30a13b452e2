"""Pure: the audit event check at ingest — types and shape, and who may report what.

A sidecar's batch is parsed and hashed by :mod:`meshward.audit.chain`; this module decides
whether each event is one the control plane stores and forwards. It is the only gate between
what a (possibly compromised) workload writes and every SIEM downstream, so it is strict on
what exports read and bounded in size and depth:

- the event is a JSON object of at most :data:`MAX_EVENT_BYTES` encoded, nesting at most
  :data:`MAX_DEPTH` deep, no non-finite numbers;
- ``class_uid`` is a non-negative integer (0 is OCSF's Base Event); the OCSF integers the formatters read (``time``,
  ``severity_id``, ``activity_id``, ``type_uid``, ``status_id``, ``action_id``,
  ``disposition_id``, ``duration``, ``http_response.code``, ``src_endpoint.port``) are integers
  (never booleans) in range; the objects they read (``metadata``, ``actor``, ``src_endpoint``,
  ``dst_endpoint``, ``http_request``, ``http_response``, ``unmapped``, ``api``, ``app``) are
  objects and ``authorizations`` a list of objects; ``message`` is a string;
- who may report what: a sidecar's API Activity (6003: it applied a config generation) names
  the verified sender as its actor (``actor.user.uid``), and its Application Lifecycle (6002)
  event names it as ``app.uid`` — a sidecar cannot put the operator, the control plane or another
  workload in those fields. The verified sender is what every export carries as the record's
  source, set by the control plane from the mTLS certificate.

:class:`EventInvalid` says what is wrong, in a few words (never echoing the payload).
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["MAX_DEPTH", "MAX_EVENT_BYTES", "EventInvalid", "check_event"]

MAX_EVENT_BYTES = 64 << 10
MAX_DEPTH = 8
_INT_MAX = 1 << 62
_API_ACTIVITY = 6003
_LIFECYCLE = 6002
_INTS = (
    "time",
    "severity_id",
    "activity_id",
    "type_uid",
    "status_id",
    "action_id",
    "disposition_id",
    "duration",
)
_OBJECTS = (
    "metadata",
    "actor",
    "src_endpoint",
    "dst_endpoint",
    "http_request",
    "http_response",
    "unmapped",
    "api",
    "app",
    "traffic",
    "trace",
)
_STRINGS = ("message", "class_name", "category_name", "activity_name", "status", "action", "disposition")


class EventInvalid(ValueError):
    """The event is not one the control plane stores (the sender's fault)."""


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and -_INT_MAX <= value <= _INT_MAX


def _check_tree(value: Any, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise EventInvalid(f"nested deeper than {MAX_DEPTH}")
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise EventInvalid("object key is not a string")
            _check_tree(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            _check_tree(item, depth + 1)
    elif isinstance(value, float) and not math.isfinite(value):
        raise EventInvalid("number is not finite")
    elif isinstance(value, int) and not isinstance(value, bool) and not _is_int(value):
        raise EventInvalid("integer out of range")


def _int_field(container: dict[str, Any], key: str, where: str) -> None:
    if key in container and container[key] is not None and not _is_int(container[key]):
        raise EventInvalid(f"{where}{key} must be an integer")


def check_event(event: Any, source: str, encoded_size: int, *, control: bool = False) -> None:
    """Raise :class:`EventInvalid` unless ``event`` (from verified sender ``source``) may be stored.

    ``encoded_size``: bytes of the event as it appears in the record line; ``control``: the
    event is the control plane's own (it may report API Activity)."""
    if not isinstance(event, dict):
        raise EventInvalid("event is not a JSON object")
    if encoded_size > MAX_EVENT_BYTES:
        raise EventInvalid(f"event larger than {MAX_EVENT_BYTES} bytes")
    _check_tree(event, 0)
    class_uid = event.get("class_uid")
    if not isinstance(class_uid, int) or not _is_int(class_uid) or class_uid < 0:
        raise EventInvalid("class_uid must be a non-negative integer (0: OCSF's Base Event)")
    for key in _INTS:
        _int_field(event, key, "")
    for key in _OBJECTS:
        if key in event and event[key] is not None and not isinstance(event[key], dict):
            raise EventInvalid(f"{key} must be an object")
    for key in _STRINGS:
        if key in event and event[key] is not None and not isinstance(event[key], str):
            raise EventInvalid(f"{key} must be a string")
    authz = event.get("authorizations")
    if authz is not None and (not isinstance(authz, list) or not all(isinstance(a, dict) for a in authz)):
        raise EventInvalid("authorizations must be a list of objects")
    _int_field(event.get("http_response") or {}, "code", "http_response.")
    _int_field(event.get("src_endpoint") or {}, "port", "src_endpoint.")
    _int_field(event.get("dst_endpoint") or {}, "port", "dst_endpoint.")
    if class_uid == _API_ACTIVITY and not control:
        actor = event.get("actor") or {}
        user = actor.get("user")
        if not isinstance(user, dict) or user.get("uid") != source:
            raise EventInvalid("an API Activity event from a sidecar must name its verified sender as actor")
    if class_uid == _LIFECYCLE and not control:
        app = event.get("app") or {}
        if app.get("uid") != source:
            raise EventInvalid("a lifecycle event must name its verified sender as app.uid")
