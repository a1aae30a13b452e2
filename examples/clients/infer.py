"""Ask the fraud model to score transactions, over the Open Inference Protocol v2.

Run inside the mesh (the sidecar adds mTLS and identity; this code only speaks plain HTTP):

    meshward run --as ml/preprocessor -- python -m examples.clients.infer --rows 3

The URL names the mesh service (``http://fraud-model.ml``); the HTTP client sends it to the
sidecar because ``HTTP_PROXY`` points there. Prints one JSON object: the HTTP status and either
the predictions or the refusal. Exit code: 0 on success, 1 when refused, 2 when unreachable.
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import os
import sys
from pathlib import Path
from typing import Any

import httpx

__all__ = ["main", "transactions"]


def transactions(count: int, fraud: bool | None = None) -> list[list[float]]:
    """Real rows of the data set the model was trained on (scikit-learn's breast-cancer CSV,
    read directly so that this client does not need to import scikit-learn); ``fraud`` picks
    the label (the CSV's class 0, "malignant", is our positive class)."""
    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("scikit-learn is not installed (pip install -e '.[examples]')")
    path = Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "breast_cancer.csv"
    rows: list[list[float]] = []
    with open(path, newline="") as f:
        reader = csv.reader(f)
        next(reader)  # "569,30,malignant,benign"
        for record in reader:
            is_fraud = int(float(record[-1])) == 0
            if fraud is None or is_fraud == fraud:
                rows.append([float(v) for v in record[:-1]])
            if len(rows) == count:
                break
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=os.environ.get("FRAUD_URL", "http://fraud-model.ml"))
    parser.add_argument("--model", default="fraud")
    parser.add_argument("--rows", type=int, default=2, help="how many transactions to score")
    parser.add_argument("--fraud", action="store_true", help="send rows of the positive class")
    args = parser.parse_args(argv)

    rows = transactions(args.rows, fraud=True if args.fraud else None)
    tensor = {"name": "input-0", "shape": [len(rows), len(rows[0])], "datatype": "FP32", "data": rows}
    url = f"{args.url.rstrip('/')}/v2/models/{args.model}/infer"
    try:
        resp = httpx.post(url, json={"id": "demo", "inputs": [tensor]}, timeout=15)
    except httpx.HTTPError as exc:
        print(json.dumps({"status": None, "error": f"{type(exc).__name__}: {exc}"}))
        return 2
    out: dict[str, Any] = {"status": resp.status_code}
    try:
        body = resp.json()
    except ValueError:
        body = resp.text[:200]
    if resp.is_success:
        outputs = {o["name"]: o["data"] for o in body["outputs"]}
        out["predictions"] = outputs.get("predict")
        out["probabilities"] = outputs.get("probability")
    else:
        out["error"] = body
    print(json.dumps(out))
    return 0 if resp.is_success else 1


if __name__ == "__main__":
    sys.exit(main())
