"""Plain data describing an AI request and its token usage (shared by every filter)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["AIOperation", "AIProtocol", "AIRequest", "TokenUsage"]

AIProtocol = Literal["openai", "oip", "tfserving", "http"]
# infer | chat | completion | embed | metadata | admin | health | other
AIOperation = Literal["infer", "chat", "completion", "embed", "metadata", "admin", "health", "other"]


@dataclass(slots=True)
class AIRequest:
    """What the classifier learned about a request: protocol, operation, model, streaming."""

    protocol: AIProtocol = "http"
    operation: AIOperation = "other"
    model: str | None = None
    streaming: bool = False
    # Estimated prompt tokens (before the call), when the body was inspected.
    prompt_tokens_estimate: int | None = None
    # Requested completion cap (max_tokens / max_completion_tokens), when present.
    max_output_tokens: int | None = None


@dataclass(slots=True)
class TokenUsage:
    """LLM tokens a call consumed; ``estimated`` when no usage was reported by the model."""

    input: int = 0
    output: int = 0
    estimated: bool = False

    @property
    def total(self) -> int:
        return self.input + self.output
