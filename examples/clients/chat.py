"""Chat with the mesh's chat model using the official ``openai`` SDK, unchanged.

    meshward run --as web/webapp -- python -m examples.clients.chat "Hello there"
    meshward run --as web/webapp -- python -m examples.clients.chat --stream "Tell me a story"
    meshward run --as web/webapp -- python -m examples.clients.chat --repeat 20 "Spend my budget"

The SDK's ``base_url`` names the mesh service (``http://chat.llm/v1``); the SDK's HTTP client
sends it to the sidecar because ``HTTP_PROXY`` points there. No API key is needed inside the
mesh (the caller's identity is its certificate), but the SDK insists on one, so any string does.

Prints one JSON object per request: the HTTP status and the answer (``content``, ``usage``, and
for ``--stream`` the number of chunks) or the refusal. With ``--repeat N`` it stops at the first
refusal. Exit code: 0 if every request succeeded, 1 if one was refused, 2 if unreachable.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

import openai

__all__ = ["ask", "main"]


def ask(
    client: openai.OpenAI, model: str, message: str, stream: bool, headers: dict[str, str]
) -> dict[str, Any]:
    messages: list[Any] = [{"role": "user", "content": message}]
    if not stream:
        reply = client.chat.completions.create(model=model, messages=messages, extra_headers=headers)
        usage = reply.usage.model_dump() if reply.usage else None
        return {"status": 200, "content": reply.choices[0].message.content, "usage": usage}
    chunks = client.chat.completions.create(
        model=model,
        messages=messages,
        stream=True,
        stream_options={"include_usage": True},
        extra_headers=headers,
    )
    parts: list[str] = []
    usage = None
    count = 0
    for chunk in chunks:
        count += 1
        if chunk.choices and chunk.choices[0].delta.content:
            parts.append(chunk.choices[0].delta.content)
        if chunk.usage:
            usage = chunk.usage.model_dump()
    return {"status": 200, "content": "".join(parts), "usage": usage, "chunks": count}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("message")
    parser.add_argument("--url", default=os.environ.get("CHAT_URL", "http://chat.llm/v1"))
    parser.add_argument("--model", default="tiny-chat")
    parser.add_argument("--stream", action="store_true")
    parser.add_argument("--repeat", type=int, default=1, help="send the request up to N times")
    parser.add_argument(
        "--header", action="append", default=[], metavar="NAME:VALUE", help="an extra request header"
    )
    args = parser.parse_args(argv)

    headers = dict(h.split(":", 1) for h in args.header)
    headers = {k.strip(): v.strip() for k, v in headers.items()}
    client = openai.OpenAI(base_url=args.url, api_key="inside-the-mesh", max_retries=0, timeout=30)
    for _ in range(max(1, args.repeat)):
        try:
            result = ask(client, args.model, args.message, args.stream, headers)
        except openai.APIStatusError as exc:
            print(json.dumps({"status": exc.status_code, "error": exc.body}), flush=True)
            return 1
        except openai.APIConnectionError as exc:
            print(json.dumps({"status": None, "error": f"{type(exc).__name__}: {exc}"}), flush=True)
            return 2
        print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
