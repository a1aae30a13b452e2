"""Least-privilege AuthorizationPolicy from observed traffic (the generator, pure).

From the requests a service accepted, :func:`suggest_policy` writes one ALLOW policy with a
rule per caller (exact principal) whose operations are exactly the (method, path template)
pairs that caller used, each narrowed to the models and AI operations seen with it. Paths are
templated by :func:`path_template`: a segment that is an id (digits, a UUID, a long hex or
mixed token) becomes ``{*}``, and so does the model's name in an Open Inference Protocol path
(``/v2/models/{*}/infer``, with ``models: [fraud]`` keeping the model itself exact).

The result, applied, allows every observed call and nothing with a caller, method, path
template, model or operation that was never seen (proved by the tests with the authz engine).
Plaintext requests (no caller identity) cannot be named by a policy and are left out.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from meshward.resources.base import API_VERSION
from meshward.review.data import ObservedRequest, principal_of

__all__ = ["OperationKey", "path_template", "rule_key", "suggest_policy"]

_UUID: Final = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_HEX: Final = re.compile(r"^[0-9a-fA-F]{8,}$")
_SAFE_SEGMENT: Final = re.compile(r"^[A-Za-z0-9._~:@!$&'()+,;=-]+$")
_MODEL_PARENTS: Final = frozenset({"models"})
TEMPLATE: Final = "{*}"


def _is_id(segment: str) -> bool:
    if segment.isdigit() or _UUID.match(segment):
        return True
    if _HEX.match(segment) and any(c.isdigit() for c in segment):
        return True
    return len(segment) >= 20 and any(c.isdigit() for c in segment) and any(c.isalpha() for c in segment)


@functools.lru_cache(maxsize=8192)  # paths repeat: a review templates each distinct one once
def path_template(path: str, model: str | None = None) -> str:
    """The path with ids (and the model's name after ``models/``) as ``{*}``; segments a
    policy could not hold literally (``*``, braces, odd characters) are templated too."""
    segments = path.split("/")
    out: list[str] = []
    for i, segment in enumerate(segments):
        previous = segments[i - 1] if i else ""
        if not segment:
            out.append(segment)
        elif (
            (model is not None and segment == model and previous in _MODEL_PARENTS)
            or _is_id(segment)
            or not _SAFE_SEGMENT.match(segment)
        ):
            out.append(TEMPLATE)
        else:
            out.append(segment)
    return "/".join(out) or "/"


@dataclass(frozen=True, slots=True, order=True)
class OperationKey:
    """What one ``to`` entry of a suggested rule allows."""

    method: str
    path: str


def rule_key(request: ObservedRequest) -> OperationKey:
    return OperationKey(request.method, path_template(request.path, request.model))


@dataclass
class _Seen:
    models: set[str]
    any_model_missing: bool
    operations: set[str]


def _operation(key: OperationKey, seen: _Seen) -> dict[str, Any]:
    operation: dict[str, Any] = {"methods": [key.method], "paths": [key.path]}
    if seen.models and not seen.any_model_missing:
        operation["models"] = sorted(seen.models)
    operation["aiOperations"] = sorted(seen.operations)
    return {"operation": operation}


def suggest_policy(
    requests: Iterable[ObservedRequest],
    *,
    name: str,
    namespace: str,
    match_labels: dict[str, str],
    dry_run: bool = False,
    annotations: Sequence[tuple[str, str]] = (),
) -> dict[str, Any]:
    """An ALLOW ``AuthorizationPolicy`` document allowing exactly ``requests`` (see module doc).

    With no request to allow it is Istio's allow-nothing policy (``rules: []``)."""
    by_caller: dict[str, dict[OperationKey, _Seen]] = {}
    for r in requests:
        if r.source is None or not r.path.startswith("/") or "*" in r.method:
            continue  # no identity to name, or nothing a policy value could hold
        ops = by_caller.setdefault(principal_of(r.source), {})
        seen = ops.setdefault(rule_key(r), _Seen(set(), False, set()))
        if r.model is None:
            seen.any_model_missing = True
        else:
            seen.models.add(r.model)
        seen.operations.add(r.operation)
    rules = [
        {
            "from": [{"source": {"principals": [caller]}}],
            "to": [_operation(key, ops[key]) for key in sorted(ops)],
        }
        for caller, ops in sorted(by_caller.items())
    ]
    metadata: dict[str, Any] = {"name": name, "namespace": namespace}
    notes = dict(annotations)
    if dry_run:
        notes["meshward.dev/dry-run"] = "true"
    if notes:
        metadata["annotations"] = dict(sorted(notes.items()))
    return {
        "apiVersion": API_VERSION,
        "kind": "AuthorizationPolicy",
        "metadata": metadata,
        "spec": {
            "selector": {"matchLabels": dict(sorted(match_labels.items()))},
            "action": "ALLOW",
            "rules": rules,
        },
    }
