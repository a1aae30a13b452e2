"""Small builders shared by the DLP tests."""

from __future__ import annotations

import json
from typing import Any

from meshward.dlp.policy import Direction, DlpPlan, compile_plans
from meshward.dlp.redact import Redactor
from meshward.resources.dataprotection import DataProtectionPolicy

__all__ = ["KEY", "chat_event", "plans", "policy", "policy_doc", "redactor"]

KEY = b"k" * 32


def policy_doc(name: str = "pii", namespace: str = "llm", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "meshward.dev/v1alpha1",
        "kind": "DataProtectionPolicy",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def policy(name: str = "pii", namespace: str = "llm", **spec: Any) -> DataProtectionPolicy:
    return DataProtectionPolicy.model_validate(policy_doc(name, namespace, **spec))


def plans(*policies: DataProtectionPolicy) -> dict[Direction, DlpPlan]:
    return compile_plans(policies)


def redactor() -> Redactor:
    return Redactor(KEY)


def chat_event(content: str, index: int = 0, **extra: Any) -> bytes:
    doc = {
        "id": "c1",
        "object": "chat.completion.chunk",
        "choices": [{"index": index, "delta": {"content": content}}],
    }
    doc.update(extra)
    return b"data: " + json.dumps(doc).encode() + b"\n\n"
