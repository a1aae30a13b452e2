"""The one error end-user authentication raises: the credential is not valid here (401)."""

from __future__ import annotations

__all__ = ["TokenRefused"]


class TokenRefused(Exception):
    """The request carried a token or key that is not valid here: answer 401 with ``reason``."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
