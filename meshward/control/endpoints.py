"""Registered sidecar endpoints as the operator sees them: listed with their validity, removed.

Shared by the control plane's ``/v1/endpoints`` API and ``meshward endpoints`` run without a
control plane (on the store directly).
"""

from __future__ import annotations

from typing import Any

from meshward.config.endpoint import parse_endpoint
from meshward.config.store import ConfigStore

__all__ = ["UnknownSidecar", "endpoint_rows", "remove_registration"]


class UnknownSidecar(LookupError):
    """No sidecar of that id is registered."""


def endpoint_rows(store: ConfigStore) -> list[dict[str, Any]]:
    """Every registered sidecar endpoint, and whether the services table uses it (and why not)."""
    rows = []
    for s in store.sidecars():
        try:
            parse_endpoint(s.inbound)
            problem = None
        except ValueError as exc:
            problem = str(exc)
        rows.append(
            {
                "sidecar": s.sidecar,
                "workload": f"{s.namespace}/{s.workload}",
                "identity": s.identity,
                "inbound": s.inbound,
                "valid": problem is None,
                "problem": problem,
            }
        )
    return rows


def remove_registration(store: ConfigStore, sidecar: str) -> None:
    """Forget ``sidecar``'s registration; :class:`UnknownSidecar` if there is none."""
    if sidecar not in {s.sidecar for s in store.sidecars()}:
        raise UnknownSidecar(f"no registered sidecar {sidecar[:256]!r}")
    store.unregister_sidecar(sidecar)
