"""RateLimitPolicy documents and request contexts shared by the rate-limit tests."""

from __future__ import annotations

import itertools
import time
from typing import Any

from meshward.ai.types import AIRequest
from meshward.filters.base import Peer, RequestContext

__all__ = ["WEBAPP", "context", "policy"]

WEBAPP = "spiffe://demo.local/ns/web/sa/webapp"
_ids = itertools.count()


def policy(
    *limits: dict[str, Any], backend: str = "local", name: str = "budget", app: str = "chat"
) -> dict[str, Any]:
    return {
        "apiVersion": "meshward.dev/v1alpha1",
        "kind": "RateLimitPolicy",
        "metadata": {"name": name, "namespace": "llm"},
        "spec": {"selector": {"matchLabels": {"app": app}}, "backend": backend, "limits": list(limits)},
    }


def context(
    spiffe_id: str | None = WEBAPP,
    *,
    model: str | None = "gpt-test",
    operation: str = "chat",
    prompt: int | None = 10,
    max_output: int | None = None,
    path: str = "/v1/chat/completions",
    method: str = "POST",
    headers: dict[str, str] | None = None,
) -> RequestContext:
    ns = sa = None
    if spiffe_id:
        parts = spiffe_id.split("/")
        ns, sa = parts[-3], parts[-1]
    return RequestContext(
        request_id=f"r{next(_ids)}",
        direction="inbound",
        peer=Peer("127.0.0.1", 40000, spiffe_id, ns, sa),
        method=method,
        path=path,
        query="",
        host="chat.llm",
        headers=headers or {},
        destination_port=80,
        start=time.monotonic(),
        ai=AIRequest(
            protocol="openai",
            operation=operation,  # type: ignore[arg-type]
            model=model,
            prompt_tokens_estimate=prompt,
            max_output_tokens=max_output,
        ),
    )
