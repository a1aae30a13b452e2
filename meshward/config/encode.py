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

from meshward.config.build import build_snapshot, services_table
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
        self._shared: dict[str, dict[str, str]] = {}  # namespace → encoded parts but "workload"

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
        own = self.snapshot(namespace, name)
        shared = self._shared.get(namespace)
        if shared is None:
            doc = own.to_json()
            shared = {key: _dumps(value) for key, value in doc.items() if key != "workload"}
            self._shared[namespace] = shared
            workload = _dumps(doc["workload"])
        else:
            # only the workload part differs within a namespace: encode it alone
            bare = MeshSnapshot(own.generation, own.trust_domain, own.mesh, own.workload, {}, ())
            workload = _dumps(bare.to_json()["workload"])
        parts = dict(shared, workload=workload)
        text = "{" + ", ".join(f"{json.dumps(key)}: {parts[key]}" for key in sorted(parts)) + "}"
        return hashlib.sha256(text.encode()).hexdigest(), text
