"""Errors of the HTTP/1.1 layer; each says whose fault it is and which status answers it.

Modelled on h11: a :class:`RemoteProtocolError` is the peer's fault (it sent something we
refuse) and carries the status code to answer with; a :class:`LocalProtocolError` is a bug or
misuse on our side.
"""

from __future__ import annotations

__all__ = ["BodyTooLarge", "HeaderTooLarge", "LocalProtocolError", "ProtocolError", "RemoteProtocolError"]


class ProtocolError(Exception):
    """Base of every HTTP protocol error."""


class RemoteProtocolError(ProtocolError):
    """The peer sent something invalid or unsafe; answer ``status`` and close the connection."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


class HeaderTooLarge(RemoteProtocolError):
    """The request head exceeds the configured size or count limit (431)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, 431)


class BodyTooLarge(RemoteProtocolError):
    """The request body exceeds the configured limit (413)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, 413)


class LocalProtocolError(ProtocolError):
    """We tried to do something HTTP/1.1 does not allow (a bug on our side)."""
