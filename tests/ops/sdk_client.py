"""A mesh client written with the ``openai`` SDK (run behind a sidecar: HTTP_PROXY is set).

``python -m tests.ops.sdk_client [N] [--strict]``: N chat calls to ``tiny-model.ml`` (no SDK
retries); prints one JSON list of ``{status, content | str, retry_after}``. ``--strict``: exit 1
unless every call succeeded (a batch Job's success is its exit code).
"""

from __future__ import annotations

import json
import sys

import openai


def main() -> int:
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    calls = int(args[0]) if args else 1
    client = openai.OpenAI(base_url="http://tiny-model.ml/v1", api_key="unused", max_retries=0, timeout=20)
    results: list[dict[str, object]] = []
    for _ in range(calls):
        try:
            done = client.chat.completions.create(
                model="tiny", messages=[{"role": "user", "content": "hello"}]
            )
            results.append({"status": 200, "content": done.choices[0].message.content})
        except openai.APIStatusError as exc:
            results.append(
                {
                    "status": exc.status_code,
                    "str": str(exc),
                    "retry_after": exc.response.headers.get("retry-after"),
                }
            )
    print(json.dumps(results), flush=True)
    return 1 if "--strict" in sys.argv and any(r["status"] != 200 for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
