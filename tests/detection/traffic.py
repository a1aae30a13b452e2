"""Query streams for the extraction tests: benign (real rows of the fraud data set, shuffled)
and an extraction attack (the demo's synthetic queries, :mod:`examples.clients.extract`)."""

from __future__ import annotations

import numpy as np

from examples.clients.extract import synthetic_queries
from examples.models.fraud import sample_rows

__all__ = ["benign_queries", "extraction_queries"]


def extraction_queries(n: int, seed: int = 3) -> list[list[float]]:
    return synthetic_queries(n, seed=seed)


def benign_queries(n: int, seed: int = 5) -> list[list[float]]:
    rows = sample_rows(569)
    order = np.random.default_rng(seed).permutation(len(rows))[:n]
    return [rows[i] for i in order]
