"""Sans-IO HTTP/1.1: strict parsing on httptools, path normalization, typed protocol errors.

Nothing here touches a socket: the proxy feeds bytes in and acts on the events that come out,
so every rule (smuggling, limits, normalization) is tested without a network.
"""

from meshward.http.errors import (
    BodyTooLarge,
    HeaderTooLarge,
    ProtocolError,
    RemoteProtocolError,
)
from meshward.http.normalize import normalize_path, split_target
from meshward.http.parser import (
    Data,
    EndOfMessage,
    Event,
    RequestHead,
    RequestParser,
    ResponseHead,
    ResponseParser,
    Upgrade,
)

__all__ = [
    "BodyTooLarge",
    "Data",
    "EndOfMessage",
    "Event",
    "HeaderTooLarge",
    "ProtocolError",
    "RemoteProtocolError",
    "RequestHead",
    "RequestParser",
    "ResponseHead",
    "ResponseParser",
    "Upgrade",
    "normalize_path",
    "split_target",
]
