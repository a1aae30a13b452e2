"""Errors of the HTTP/1.1 layer; each says whose fault it is and which status answers it.

Modelled on h11: a :class:`RemoteProtocolError` is the peer's fault (it sent something we
refuse) and carries the status code to answer with. (h11's ``LocalProtocolError``, misuse on our
side, has no counterpart: the sidecar writes heads from validated parts, and a bug there is an
ordinary exception answered with a 500.)
"""

from __future__ import annotations

__all__ = ["BodyTooLarge", "HeaderTooLarge", "ProtocolError", "RemoteProtocolError"]


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
