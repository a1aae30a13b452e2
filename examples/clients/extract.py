"""A model-extraction attack on the fraud model, for the demo (synthetic PRADA-style queries).

    meshward run --as ml/preprocessor -- python -m examples.clients.extract --max 400

Starts from a few real rows and keeps sending small signed perturbations of earlier queries
(Jacobian-based dataset augmentation, as in Papernot et al. 2017), 5 rows per request, until a
request is refused or ``--max`` queries were sent. Prints one JSON object: the last HTTP status,
how many queries were answered, and whether the caller was cut off.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys

import httpx

from examples.clients.infer import transactions

__all__ = ["main", "synthetic_queries"]


def synthetic_queries(count: int, seed: int = 3, step: float = 0.1) -> list[list[float]]:
    rows = transactions(569)
    rng = random.Random(seed)
    scale = [statistics.pstdev(col) for col in zip(*rows, strict=True)]
    queries = rng.sample(rows, 8)
    while len(queries) < count:
        base = queries[rng.randrange(len(queries))]
        queries.append([v + step * s * rng.choice((-1.0, 1.0)) for v, s in zip(base, scale, strict=True)])
    return queries[:count]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=os.environ.get("FRAUD_URL", "http://fraud-model.ml"))
    parser.add_argument("--max", type=int, default=400, help="at most this many queries")
    args = parser.parse_args(argv)
    queries = synthetic_queries(args.max)
    url = f"{args.url.rstrip('/')}/v2/models/fraud/infer"
    answered, status = 0, None
    with httpx.Client(timeout=15) as client:
        for i in range(0, len(queries), 5):
            rows = queries[i : i + 5]
            tensor = {"name": "input-0", "shape": [len(rows), len(rows[0])], "datatype": "FP32", "data": rows}
            try:
                status = client.post(url, json={"inputs": [tensor]}).status_code
            except httpx.HTTPError as exc:
                print(
                    json.dumps(
                        {"status": None, "error": f"{type(exc).__name__}: {exc}", "answered": answered}
                    )
                )
                return 2
            if status != 200:
                break
            answered += len(rows)
    print(json.dumps({"status": status, "answered": answered, "refused": status == 403}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
