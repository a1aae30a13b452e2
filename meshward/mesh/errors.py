"""The local mesh runner's error: the mesh cannot start, and the message says why."""

from __future__ import annotations

__all__ = ["MeshError"]


class MeshError(Exception):
    """The mesh cannot start (the message says why and whose fault it is)."""
