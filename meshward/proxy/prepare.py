"""One inbound request head → the :class:`RequestContext` the filters see. Shared on purpose.

The sidecar (:mod:`meshward.proxy.inbound`) and ``meshward check`` (:mod:`meshward.mesh.check`)
both call :func:`prepare_request`, so a decision previewed without traffic reads exactly the
attributes a served request would: the same target split and path normalization (encoded
slashes per the mesh's ``pathNormalization``), the same header hygiene (Connection-nominated and
mesh-owned fields out, repeated fields joined, cookies with ``"; "``), the same AI
classification of the head. Pure: no I/O, raises :class:`RemoteProtocolError` (a 400) for what
the sidecar refuses.
"""

from __future__ import annotations

from meshward.ai.protocol import classify
from meshward.filters.base import Peer, RequestContext
from meshward.http.errors import RemoteProtocolError
from meshward.http.events import RequestHead
from meshward.http.hygiene import clean_request_headers, websocket_upgrade
from meshward.http.normalize import EncodedSlashes, normalize_path, split_target

__all__ = ["prepare_request"]


def prepare_request(
    head: RequestHead,
    encoded_slashes: EncodedSlashes,
    *,
    request_id: str,
    peer: Peer,
    destination_port: int,
    start: float,
) -> RequestContext:
    """The request as filters and app both see it (before any body is read)."""
    _, raw_path, query = split_target(head.target) if head.target != "*" else (None, "*", "")
    path = normalize_path(raw_path, encoded_slashes) if raw_path != "*" else raw_path  # OPTIONS *
    headers = clean_request_headers(head.headers, head.connection)
    if head.upgrade and not websocket_upgrade(headers.get("upgrade")):
        raise RemoteProtocolError("only WebSocket upgrades are supported")
    ctx = RequestContext(
        request_id=request_id,
        direction="inbound",
        peer=peer,
        method=head.method,
        path=path,
        query=query,
        host=headers.get("host", ""),
        headers=headers,
        destination_port=destination_port,
        start=start,
    )
    ctx.ai = classify(head.method, path, headers, None)
    return ctx
