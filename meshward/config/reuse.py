"""Pure: values made from documents, kept from one round to the next by the document's text.

A sidecar decodes a snapshot per config generation and the control plane reads the resources of
each generation; from one to the next only a few documents change. :func:`reused` gives the
value made last round for the same text (models are frozen, so sharing one is safe) and makes
only what is new; what a round used becomes the next round's memory, so nothing stale is kept.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from typing import TypeVar

__all__ = ["reused"]

K = TypeVar("K", bound=Hashable)
D = TypeVar("D")
V = TypeVar("V")


def reused(key: K, doc: D, make: Callable[[D], V], known: Mapping[K, V], fresh: dict[K, V]) -> V:
    """The value of ``doc`` (whose text is ``key``): from this round (``fresh``), else the last one
    (``known``), else ``make(doc)``; recorded in ``fresh`` (the caller keeps it as ``known`` once
    the round is whole)."""
    value = fresh.get(key)
    if value is None:
        value = known.get(key)
        if value is None:
            value = make(doc)
        fresh[key] = value
    return value
