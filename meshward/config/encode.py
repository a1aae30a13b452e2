"""Pure: every workload's snapshot of one generation as JSON text, encoding shared parts once.

When a generation changes, the control plane answers every watching sidecar with its snapshot.
Most of a snapshot is the same for every workload of a namespace (the mesh settings, the
services table, the policies in scope), so :class:`GenerationEncoder` encodes those parts once
per namespace and only the ``workload`` part per workload, then joins them. The text equals
``json.dumps(build_snapshot(...).to_json(), sort_keys=True)`` exactly (tested), so its SHA-256
is the snapshot's digest whichever way it was made.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

from meshward.config.build import build_snapshot, services_table, workload_info
from meshward.config.snapshot import MeshSnapshot
from meshward.config.store import SidecarRecord
from meshward.resources import Resource

__all__ = ["GenerationEncoder"]


def _dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


class GenerationEncoder:
    """Snapshots of one generation (resources + registered sidecars) as ``(digest, json_text)``."""

    def __init__(
        self,
        generation: int,
        resources: Sequence[Resource[Any]],
        sidecars: Sequence[SidecarRecord],
        trust_domain: str,
        revoked: Sequence[str] = (),
    ) -> None:
        self.generation = generation
        self.revoked = tuple(revoked)
        self.resources = list(resources)
        self.sidecars = list(sidecars)
        self.trust_domain = trust_domain
        self.services = services_table(self.resources, self.sidecars, trust_domain)
        self._shared: dict[str, _Around] = {}  # namespace → its encoded text around "workload"

    def snapshot(self, namespace: str, name: str) -> MeshSnapshot:
        return build_snapshot(
            self.generation,
            self.resources,
            self.sidecars,
            self.trust_domain,
            namespace,
            name,
            self.services,
            self.revoked,
        )

    def encode(self, namespace: str, name: str) -> tuple[str, str]:
        """``(sha256 hex digest, JSON text)`` of workload ``namespace/name``'s snapshot."""
        shared = self._shared.get(namespace)
        if shared is None:
            doc = self.snapshot(namespace, name).to_json()
            shared = self._shared[namespace] = _Around(doc)
            workload = _dumps(doc["workload"])
        else:  # only the workload part differs within a namespace: encode it alone
            workload = _dumps(workload_info(self.resources, namespace, name).to_json())
        tail = workload + shared.suffix
        digest = shared.hashed.copy()  # the prefix is hashed once per namespace
        digest.update(tail.encode())
        return digest.hexdigest(), shared.prefix + tail


class _Around:
    """A namespace's snapshot text around its ``workload`` value: the keys in sorted order, as
    ``json.dumps(..., sort_keys=True)`` writes them, and the SHA-256 state after the prefix."""

    __slots__ = ("hashed", "prefix", "suffix")

    def __init__(self, doc: dict[str, Any]) -> None:
        keys = sorted(doc)
        at = keys.index("workload")

        def items(names: list[str]) -> str:
            return ", ".join(f"{json.dumps(key)}: {_dumps(doc[key])}" for key in names)

        before, after = items(keys[:at]), items(keys[at + 1 :])
        self.prefix = "{" + before + (", " if before else "") + '"workload": '
        self.suffix = (", " + after if after else "") + "}"
        self.hashed = hashlib.sha256(self.prefix.encode())
