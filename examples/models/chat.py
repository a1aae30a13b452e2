"""An OpenAI-compatible chat model server, standard library only.

Run: ``python -m examples.models.chat --port 8000 [--echo] [--test-hooks]``

Serves ``POST /v1/chat/completions`` (streaming and not, with ``usage``), ``POST /v1/completions``,
``POST /v1/embeddings``, ``GET /v1/models[/ID]`` and ``GET /health``. The "model" is a word-level
bigram (Markov) model trained at start-up on the Zen of Python (which ships with Python) and a
short corpus below; generation is seeded from the prompt, so the same request gets the same
answer. Any model name is accepted and echoed back.

Tokens: a token is a run of word characters or one punctuation character (``\\w+|[^\\w\\s]``).
``prompt_tokens`` counts the tokens of every message's text, ``completion_tokens`` those of the
answer. A streamed answer sends one chunk per token (with its leading whitespace).

Streams follow the OpenAI API: ``data: {chunk}`` events, a first chunk with the role, one chunk
per token, a chunk with ``finish_reason``, then - only when ``stream_options.include_usage`` is
true - a last chunk with ``choices: []`` and the ``usage`` (every earlier chunk then has
``"usage": null``), then ``data: [DONE]``.

``--echo``: the answer is the last user message verbatim, so a test can see what the model saw.
``--test-hooks`` (tests only) honours two request headers: ``X-Test-Append: TEXT`` appends TEXT to
the answer (streamed token by token, so e.g. a card number crosses chunk boundaries) and
``X-Test-Delay-Ms: N`` waits N ms before each streamed chunk (or once, when not streaming).
``--leak-emails`` (the bad ``chat-v2`` of ``examples/rollout``): every answer ends with a
customer's email address, which a DataProtectionPolicy finds and a rollout's DLP check rolls back.
``--instance NAME`` adds ``X-Model-Instance: NAME`` to every JSON answer (which replica served).
"""

from __future__ import annotations

import argparse
import base64
import codecs
import contextlib
import hashlib
import io
import itertools
import json
import math
import random
import re
import struct
import time
import uuid
from typing import Any

from examples.models.httpjson import BadRequest, JsonHandler, serve

__all__ = ["BigramModel", "ChatHandler", "count_tokens", "embed", "main", "stream_pieces"]

TOKEN = re.compile(r"\w+|[^\w\s]")
PIECE = re.compile(r"\s*\w+|\s*[^\w\s]|\s+")  # a token with its leading whitespace
WORD = re.compile(r"\w+(?:'\w+)?|[^\w\s]")  # what the bigram model generates
NO_SPACE_BEFORE = set(".,;:!?)")

CORPUS = """\
A service mesh moves security out of the application and into the network.
Every workload gets an identity, and every connection proves it with mutual TLS.
A model answers only the callers that policy allows.
The sidecar checks the certificate, then the policy, then the budget, then the data.
Zero trust means that nothing is trusted because of where it runs.
A short certificate is a small risk, and a renewed certificate is a fresh one.
The audit trail remembers who asked which model for what, and when.
A prompt may carry secrets, so the mesh masks them before the model sees them.
An answer may leak data, so the mesh reads it on the way back.
Tokens are a budget, and a budget is a policy that counts.
The fraud model scores a transaction, and the chat model writes a reply.
Good defaults deny first and explain why.
"""


def _zen_of_python() -> str:
    """The Zen of Python, from the ``this`` module that ships with Python (it prints on import)."""
    with contextlib.redirect_stdout(io.StringIO()):
        import this
    return codecs.decode(this.s, "rot13")


def count_tokens(text: str) -> int:
    return len(TOKEN.findall(text))


def stream_pieces(text: str) -> list[str]:
    """Split ``text`` into streamable pieces; ``"".join(pieces) == text``."""
    return PIECE.findall(text)


def _join(words: list[str]) -> str:
    out: list[str] = []
    for w in words:
        if out and w not in NO_SPACE_BEFORE:
            out.append(" ")
        out.append(w)
    return "".join(out)


class BigramModel:
    """Next word = a random successor of the current word, seeded from the prompt."""

    def __init__(self, text: str) -> None:
        self.successors: dict[str, list[str]] = {}
        self.starters: list[str] = []
        for line in text.splitlines():
            words = WORD.findall(line)
            if not words:
                continue
            self.starters.append(words[0])
            for a, b in itertools.pairwise(words):
                self.successors.setdefault(a.lower(), []).append(b)

    def generate(self, prompt: str, max_tokens: int) -> tuple[str, str]:
        """Return ``(text, finish_reason)``; deterministic for a given prompt and limit."""
        rng = random.Random(hashlib.sha256(prompt.encode()).digest())
        known = [w for w in WORD.findall(prompt) if w.lower() in self.successors and w.isalpha()]
        word = known[-1].capitalize() if known else rng.choice(self.starters)
        words = [word]
        while count_tokens(_join(words)) < max_tokens:
            nxt = self.successors.get(word.lower())
            word = rng.choice(nxt) if nxt else rng.choice(self.starters)
            words.append(word)
            if word in ".!?" and len(words) >= 8:
                return _join(words), "stop"
        text = _join(words)
        while count_tokens(text) > max_tokens:  # the last word may be several tokens
            words.pop()
            text = _join(words)
        return text, "length"


def embed(text: str, dimensions: int) -> list[float]:
    """A deterministic unit vector: hashed bag of lower-cased tokens."""
    vec = [0.0] * dimensions
    for tok in TOKEN.findall(text.lower()):
        h = hashlib.sha256(tok.encode()).digest()
        vec[int.from_bytes(h[:4], "big") % dimensions] += 1.0 if h[4] & 1 else -1.0
    norm = math.sqrt(sum(v * v for v in vec))
    if norm == 0.0:
        vec[0], norm = 1.0, 1.0
    return [v / norm for v in vec]


def _content_text(content: Any) -> str:
    """A message's ``content``: a string or a list of parts (only text parts count)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    raise BadRequest("message content must be a string or a list of content parts")


class ChatHandler(JsonHandler):
    model = BigramModel(_zen_of_python() + "\n" + CORPUS)
    served_models: list[str] = ["tiny-chat"]
    echo = False
    test_hooks = False
    leak_emails = False
    instance = ""
    created = int(time.time())

    def error_payload(self, status: int, message: str) -> Any:
        kind = "invalid_request_error" if status < 500 else "server_error"
        return {"error": {"message": message, "type": kind, "param": None, "code": None}}

    # -- helpers ---------------------------------------------------------------------------
    def send_json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        if self.instance:
            headers = {**(headers or {}), "X-Model-Instance": self.instance}
        super().send_json(status, payload, headers)

    def _hook(self, name: str) -> str:
        return self.headers.get(name, "") if self.test_hooks else ""

    def _delay(self) -> None:
        ms = self._hook("X-Test-Delay-Ms")
        if ms:
            time.sleep(min(int(ms), 10_000) / 1000)

    def _answer(self, prompt: str, last_user: str, body: dict[str, Any]) -> tuple[str, str]:
        if self.echo:
            text, reason = last_user, "stop"
        else:
            limit = body.get("max_completion_tokens") or body.get("max_tokens") or 24
            if not isinstance(limit, int) or limit < 1:
                raise BadRequest("max_tokens must be a positive integer")
            text, reason = self.model.generate(prompt, min(limit, 512))
        extra = self._hook("X-Test-Append")
        if self.leak_emails:
            extra = f"{extra} Contact jane.doe@example.com for details.".strip()
        if extra:
            text = f"{text} {extra}" if text else extra
        return text, reason

    def _stream(self, chunks: list[dict[str, Any]], usage: dict[str, int] | None) -> None:
        self.start_chunked("text/event-stream")
        for chunk in chunks:
            if usage is not None:
                chunk["usage"] = None
            self._delay()
            self.write_chunk(b"data: %s\n\n" % json.dumps(chunk, separators=(",", ":")).encode())
        if usage is not None:
            last = dict(chunks[0], choices=[], usage=usage)
            self.write_chunk(b"data: %s\n\n" % json.dumps(last, separators=(",", ":")).encode())
        self.write_chunk(b"data: [DONE]\n\n")
        self.end_chunked()

    @staticmethod
    def _usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
        return {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        }

    @staticmethod
    def _wants_usage(body: dict[str, Any]) -> bool:
        opts = body.get("stream_options") or {}
        return isinstance(opts, dict) and opts.get("include_usage") is True

    def _body(self) -> dict[str, Any]:
        body = self.read_json()
        if not isinstance(body, dict):
            raise BadRequest("request body must be a JSON object")
        return body

    # -- routes ----------------------------------------------------------------------------
    def chat_completions(self) -> None:
        body = self._body()
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise BadRequest("'messages' must be a non-empty list")
        texts = [_content_text(m.get("content")) for m in messages if isinstance(m, dict)]
        users = [
            _content_text(m.get("content"))
            for m in messages
            if isinstance(m, dict) and m.get("role") == "user"
        ]
        prompt = "\n".join(texts)
        text, reason = self._answer(prompt, users[-1] if users else "", body)
        usage = self._usage(count_tokens(prompt), count_tokens(text))
        model = str(body.get("model") or self.served_models[0])
        base = {"id": f"chatcmpl-{uuid.uuid4().hex[:24]}", "created": int(time.time()), "model": model}
        if not body.get("stream"):
            self._delay()
            message = {"role": "assistant", "content": text, "refusal": None}
            choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": reason}
            self.send_json(200, {**base, "object": "chat.completion", "choices": [choice], "usage": usage})
            return

        def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
            return {**base, "object": "chat.completion.chunk", "choices": [choice]}

        chunks = [chunk({"role": "assistant", "content": ""})]
        chunks += [chunk({"content": piece}) for piece in stream_pieces(text)]
        chunks.append(chunk({}, reason))
        self._stream(chunks, usage if self._wants_usage(body) else None)

    def completions(self) -> None:
        body = self._body()
        prompt = body.get("prompt", "")
        if isinstance(prompt, list):
            prompt = "\n".join(str(p) for p in prompt)
        if not isinstance(prompt, str):
            raise BadRequest("'prompt' must be a string or a list of strings")
        text, reason = self._answer(prompt, prompt, body)
        usage = self._usage(count_tokens(prompt), count_tokens(text))
        model = str(body.get("model") or self.served_models[0])
        base = {
            "id": f"cmpl-{uuid.uuid4().hex[:24]}",
            "object": "text_completion",
            "created": int(time.time()),
        }
        base["model"] = model

        def choice(piece: str, finish: str | None) -> dict[str, Any]:
            return {"index": 0, "text": piece, "logprobs": None, "finish_reason": finish}

        if not body.get("stream"):
            self._delay()
            self.send_json(200, {**base, "choices": [choice(text, reason)], "usage": usage})
            return
        chunks = [{**base, "choices": [choice(p, None)]} for p in stream_pieces(text)]
        chunks.append({**base, "choices": [choice("", reason)]})
        self._stream(chunks, usage if self._wants_usage(body) else None)

    def embeddings(self) -> None:
        body = self._body()
        raw = body.get("input")
        if isinstance(raw, str):
            inputs = [raw]
        elif isinstance(raw, list) and raw and all(isinstance(x, int) for x in raw):
            inputs = [" ".join(map(str, raw))]  # one pre-tokenized input
        elif isinstance(raw, list) and raw:
            inputs = [x if isinstance(x, str) else " ".join(map(str, x)) for x in raw]
        else:
            raise BadRequest("'input' must be a string or a non-empty list")
        dims = body.get("dimensions") or 32
        if not isinstance(dims, int) or not 1 <= dims <= 4096:
            raise BadRequest("'dimensions' must be an integer between 1 and 4096")
        as_base64 = body.get("encoding_format") == "base64"
        data = []
        for i, text in enumerate(inputs):
            vec: Any = embed(text, dims)
            if as_base64:  # what the openai SDK asks for: little-endian float32
                vec = base64.b64encode(struct.pack(f"<{dims}f", *vec)).decode()
            data.append({"object": "embedding", "index": i, "embedding": vec})
        tokens = sum(count_tokens(t) for t in inputs)
        model = str(body.get("model") or self.served_models[0])
        usage = {"prompt_tokens": tokens, "total_tokens": tokens}
        self.send_json(200, {"object": "list", "data": data, "model": model, "usage": usage})

    def _model_card(self, name: str) -> dict[str, Any]:
        return {"id": name, "object": "model", "created": self.created, "owned_by": "meshward-examples"}

    def models(self) -> None:
        self.send_json(200, {"object": "list", "data": [self._model_card(m) for m in self.served_models]})

    def one_model(self) -> None:
        name = self.path.split("?", 1)[0].removeprefix("/v1/models/")
        if name not in self.served_models:
            self.send_json(404, self.error_payload(404, f"The model '{name}' does not exist"))
            return
        self.send_json(200, self._model_card(name))

    def health(self) -> None:
        self.send_json(200, {"status": "ok"})

    routes = {
        ("POST", "/v1/chat/completions"): "chat_completions",
        ("POST", "/v1/completions"): "completions",
        ("POST", "/v1/embeddings"): "embeddings",
        ("GET", "/v1/models"): "models",
        ("GET", "/health"): "health",
    }
    prefix_routes = [("GET", "/v1/models/", "one_model")]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument(
        "--model", action="append", help="a model name to list (repeatable; default tiny-chat)"
    )
    parser.add_argument("--echo", action="store_true", help="answer with the last user message verbatim")
    parser.add_argument("--test-hooks", action="store_true", help="honour X-Test-* request headers (tests)")
    parser.add_argument("--verbose", action="store_true", help="log request lines (never payloads)")
    parser.add_argument("--leak-emails", action="store_true", help="end every answer with an email address")
    parser.add_argument("--instance", default="", help="sent as X-Model-Instance on JSON answers")
    args = parser.parse_args(argv)
    ChatHandler.leak_emails = args.leak_emails
    ChatHandler.instance = args.instance
    ChatHandler.served_models = args.model or ["tiny-chat"]
    ChatHandler.echo = args.echo
    ChatHandler.test_hooks = args.test_hooks
    ChatHandler.verbose = args.verbose
    mode = " (echo)" if args.echo else ""
    serve(ChatHandler, args.host, args.port, f"chat model{mode}")


if __name__ == "__main__":
    main()
