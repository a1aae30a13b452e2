"""A caller run inside the mesh (``meshward run --as ... -- python -m tests.detection.traffic``).

Modes (one JSON line printed per phase, timestamps from this process's monotonic clock):

- ``benign N``: N real rows of the fraud data set, 5 per request;
- ``extract N``: N synthetic queries of an extraction attack (Jacobian-style augmentation: small
  signed steps from a few seed rows), 5 per request;
- ``burst N``: N requests the caller is not allowed to make (admin operations), then an allowed
  inference every 50 ms until one is refused (or 15 s): how long the quarantine took;
- ``infer``: one allowed inference.
"""

from __future__ import annotations

import json
import os
import sys
import time

import httpx
import numpy as np

from examples.models.fraud import sample_rows

URL = os.environ.get("FRAUD_URL", "http://fraud-model.ml")


def _infer(client: httpx.Client, rows: list[list[float]]) -> int:
    tensor = {"name": "input-0", "shape": [len(rows), len(rows[0])], "datatype": "FP32", "data": rows}
    return client.post(f"{URL}/v2/models/fraud/infer", json={"inputs": [tensor]}).status_code


def extraction_queries(n: int, seed: int = 3) -> list[list[float]]:
    rng = np.random.default_rng(seed)
    base = np.array(sample_rows(569))
    scale = base.std(axis=0)
    out = list(base[rng.permutation(len(base))[:8]])
    while len(out) < n:
        out.append(out[rng.integers(0, len(out))] + 0.1 * scale * np.sign(rng.normal(size=base.shape[1])))
    return [[float(v) for v in row] for row in out[:n]]


def benign_queries(n: int, seed: int = 5) -> list[list[float]]:
    rows = sample_rows(569)
    order = np.random.default_rng(seed).permutation(len(rows))[:n]
    return [rows[i] for i in order]


def main(argv: list[str]) -> int:
    mode, n = argv[0], int(argv[1]) if len(argv) > 1 else 1
    with httpx.Client(timeout=10) as client:
        if mode in ("benign", "extract"):
            rows = benign_queries(n) if mode == "benign" else extraction_queries(n)
            statuses = [_infer(client, rows[i : i + 5]) for i in range(0, len(rows), 5)]
            print(json.dumps({"mode": mode, "statuses": sorted(set(statuses)), "requests": len(statuses)}))
        elif mode == "burst":
            statuses = [client.post(f"{URL}/v2/repository/models/fraud/unload").status_code for _ in range(n)]
            start = time.monotonic()
            refused_after = None
            row = sample_rows(1)
            while time.monotonic() - start < 15:
                if _infer(client, row) == 403:
                    refused_after = time.monotonic() - start
                    break
                time.sleep(0.05)
            print(
                json.dumps({"mode": mode, "statuses": sorted(set(statuses)), "refused_after": refused_after})
            )
        else:
            print(json.dumps({"mode": mode, "status": _infer(client, sample_rows(1))}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
