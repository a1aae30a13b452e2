"""Header hygiene on the inbound side: the one view of a request's fields that filters and app share.

Whatever the filters decide on must be exactly what the app receives, so the fields are
cleaned *before* any filter sees them (and the same dict is what gets forwarded):

- fields a ``Connection`` header nominates are hop-by-hop (RFC 9110 §7.6.1): they are removed
  here, not only when forwarding - else ``Connection: content-type`` shows the filters a
  Content-Type the app never receives. Nominating a field the request cannot lose (``Host``,
  ``Content-Length``, ``Transfer-Encoding``) is refused with 400;
- fields the mesh sets or vouches for (:data:`MESH_OWNED`: ``X-Forwarded-Client-Cert``,
  ``X-Forwarded-For``, ``Forwarded``, ...) never come from outside: they are dropped, in every
  spelling - any case, and with ``_`` for ``-`` (``X_Forwarded_Client_Cert`` becomes
  ``HTTP_X_FORWARDED_CLIENT_CERT`` in a WSGI/CGI server, the same variable as the real one);
- any other name with ``_`` that would collide with a protected field or with another field
  of the request once ``_`` reads as ``-`` is dropped too (Envoy's
  ``headers_with_underscores_action: DROP_HEADER``, applied where it matters);
- a repeated ``Content-Type`` is refused (400): parsers disagree on which one counts;
- ``Upgrade`` is matched by exact token: only ``websocket``, alone.

Names come out lower-case; repeated fields are joined with ``", "`` (cookies with ``"; "``).
"""

from __future__ import annotations

from meshward.http.errors import RemoteProtocolError
from meshward.http.framing import HOP_BY_HOP, connection_tokens

__all__ = ["END_USER", "MESH_OWNED", "UNDROPPABLE", "clean_request_headers", "websocket_upgrade"]

# Set by the inbound sidecar (or by a trusted proxy in front of it): never taken from a caller.
MESH_OWNED = frozenset(
    {
        "x-forwarded-client-cert",
        "x-forwarded-proto",
        "x-forwarded-for",
        "x-forwarded-host",
        "x-forwarded-port",
        "x-forwarded-prefix",
        "forwarded",
        "x-real-ip",
        "x-client-ip",
        "x-envoy-external-address",
        "x-meshward-peer",
    }
)
# The end user a sidecar or gateway authenticated (``meshward.filters.authn``): set by the mesh,
# trusted only from a gateway peer, so no underscore spelling of it may reach an app either.
END_USER = "x-meshward-end-user"
# Fields a Connection header may not nominate: the request is meaningless without them.
UNDROPPABLE = frozenset({"host", "content-length", "transfer-encoding"})
_HOP_NAMES = frozenset(h.decode() for h in HOP_BY_HOP)
# Names whose underscore spelling is dropped even when the dashed one is absent.
_PROTECTED = (
    MESH_OWNED
    | UNDROPPABLE
    | _HOP_NAMES
    | frozenset(
        {"content-type", "content-encoding", "authorization", "cookie", "expect", "x-request-id", END_USER}
    )
)


def clean_request_headers(raw: list[tuple[bytes, bytes]], connection: bytes | None) -> dict[str, str]:
    """The request's fields as filters and app both see them (see the module docstring)."""
    # Hop-by-hop fields proper (Upgrade, Keep-Alive, ...) stay: the proxy itself handles them.
    nominated = {t.decode("latin-1") for t in connection_tokens(connection)} - _HOP_NAMES - {""}
    refused = nominated & UNDROPPABLE
    if refused:
        raise RemoteProtocolError(
            f"Connection header nominates {sorted(refused)[0]}, which cannot be hop-by-hop"
        )
    out: dict[str, str] = {}
    underscored: list[tuple[str, str]] = []
    content_types = 0
    for n, v in raw:
        name = n.decode("latin-1").lower()
        if "_" in name:
            underscored.append((name, v.decode("latin-1")))
            continue
        if name in MESH_OWNED or name in nominated:
            continue
        if name == "content-type":
            content_types += 1
            if content_types > 1:
                raise RemoteProtocolError("repeated Content-Type header")
        _add(out, name, v.decode("latin-1"))
    for name, value in underscored:
        dashed = name.replace("_", "-")
        if dashed in _PROTECTED or dashed in out or name in nominated:
            continue
        _add(out, name, value)
    return out


def _add(out: dict[str, str], name: str, value: str) -> None:
    prev = out.get(name)
    if prev is None:
        out[name] = value
    else:
        out[name] = prev + ("; " if name == "cookie" else ", ") + value


def websocket_upgrade(value: str | None) -> bool:
    """Whether an ``Upgrade`` value asks for exactly one protocol, ``websocket`` (any case)."""
    return value is not None and value.strip().lower() == "websocket"
