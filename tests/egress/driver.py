"""The app in egress tests: the ``openai`` SDK behind ``meshward run``, driven line by line.

Reads one JSON command per line on stdin, answers one JSON line on stdout. The SDK's
``base_url`` is ``http://api.llm.example/v1`` (plain HTTP: the sidecar originates TLS) and its
key is a dummy: the sidecar must replace it. ``HTTP_PROXY`` (set by ``meshward run``) routes
everything through the sidecar.

Commands: ``{"op": "chat", "model": M, "content": TEXT, "stream": bool, "host": H}`` (the SDK)
and ``{"op": "http", "method": M, "url": U, "json": {...}}`` (plain httpx).
"""

from __future__ import annotations

import json
import sys
from typing import Any

import httpx
import openai

APP_KEY = "sk-app-dummy-key-not-the-real-one"


def _chat(cmd: dict[str, Any]) -> dict[str, Any]:
    host = cmd.get("host", "api.llm.example")
    client = openai.OpenAI(base_url=f"http://{host}/v1", api_key=APP_KEY, max_retries=0, timeout=20)
    messages = [{"role": "user", "content": cmd["content"]}]
    try:
        if cmd.get("stream"):
            text = ""
            usage = None
            stream = client.chat.completions.create(
                model=cmd["model"], messages=messages, stream=True, stream_options={"include_usage": True}
            )
            for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    text += chunk.choices[0].delta.content
                if chunk.usage is not None:
                    usage = chunk.usage.total_tokens
            return {"status": 200, "text": text, "tokens": usage}
        answer = client.chat.completions.create(model=cmd["model"], messages=messages)
        total = answer.usage.total_tokens if answer.usage else None
        return {"status": 200, "text": answer.choices[0].message.content, "tokens": total}
    except openai.APIStatusError as exc:
        try:
            body = exc.response.json()
        except ValueError:
            body = {"raw": exc.response.text}
        return {"status": exc.status_code, "body": body}
    except openai.APIError as exc:
        return {"status": -1, "error": f"{type(exc).__name__}: {exc}"}


def _http(cmd: dict[str, Any]) -> dict[str, Any]:
    with httpx.Client(timeout=20) as client:  # trust_env: HTTP_PROXY is the sidecar
        r = client.request(
            cmd["method"], cmd["url"], json=cmd.get("json"), headers={"Authorization": f"Bearer {APP_KEY}"}
        )
    try:
        body = r.json()
    except ValueError:
        body = {"raw": r.text[:500]}
    return {"status": r.status_code, "body": body}


def main() -> None:
    for line in sys.stdin:
        if not line.strip():
            continue
        cmd = json.loads(line)
        if cmd["op"] == "quit":
            break
        result = _chat(cmd) if cmd["op"] == "chat" else _http(cmd)
        sys.stdout.write(json.dumps(result) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
