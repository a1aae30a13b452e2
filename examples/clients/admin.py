"""Operate the fraud model's repository (admin operations of the Open Inference Protocol v2).

    meshward run --as ops/ops -- python -m examples.clients.admin index
    meshward run --as ops/ops -- python -m examples.clients.admin unload
    meshward run --as ops/ops -- python -m examples.clients.admin load

Prints one JSON object with the HTTP status and the answer. Exit code: 0 on success, 1 when
refused, 2 when unreachable.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import httpx

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["index", "load", "unload"])
    parser.add_argument("--url", default=os.environ.get("FRAUD_URL", "http://fraud-model.ml"))
    parser.add_argument("--model", default="fraud")
    args = parser.parse_args(argv)

    base = args.url.rstrip("/")
    path = (
        "/v2/repository/index"
        if args.action == "index"
        else f"/v2/repository/models/{args.model}/{args.action}"
    )
    try:
        resp = httpx.post(base + path, json={}, timeout=15)
    except httpx.HTTPError as exc:
        print(json.dumps({"status": None, "error": f"{type(exc).__name__}: {exc}"}))
        return 2
    try:
        body = resp.json()
    except ValueError:
        body = resp.text[:200]
    print(json.dumps({"status": resp.status_code, "body": body}))
    return 0 if resp.is_success else 1


if __name__ == "__main__":
    sys.exit(main())
