"""Shadow requests: send a copy of a request to the mirror subset and keep its answer.

The copy goes over its own mTLS connection (our SVID; the server must prove one of the
service's identities, as for any upstream), with ``Connection: close``, bounded in time
(the sidecar's ``request_timeout``, at most 30 s) and size (1 MiB of body). The answer is never
sent to the caller: only its status, body and latency are kept for the comparison in
:mod:`meshward.proxy.forward`. A shadow that fails counts as a 502.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from dataclasses import dataclass
from typing import TYPE_CHECKING

from meshward.http.errors import RemoteProtocolError
from meshward.http.parser import Data, EndOfMessage, ResponseHead, ResponseParser
from meshward.proxy.upstream import UpstreamTarget
from meshward.tls.peer import PeerIdentityError, peer_identity

if TYPE_CHECKING:
    from meshward.proxy.routes import Route
    from meshward.proxy.sidecar import Sidecar

__all__ = ["MirrorResult", "send_mirror"]

log = logging.getLogger("meshward.rollout")

_MAX_BODY = 1 << 20
_MAX_SECONDS = 30.0


@dataclass(frozen=True, slots=True)
class MirrorResult:
    subset: str
    status: int
    body: bytes
    latency: float


async def send_mirror(sidecar: Sidecar, route: Route, subset: str, request: bytes) -> MirrorResult | None:
    """Send ``request`` (a whole serialized request) to an endpoint of ``subset``."""
    plan = route.plan
    keys = plan.members.get(subset)
    loop = asyncio.get_running_loop()
    if not keys:
        return None
    i = plan.balancer.pick(keys, loop.time())
    if i < 0:
        return None
    target = route.targets[plan.keys.index(keys[i])]
    start = loop.time()
    head, sep, rest = request.partition(b"\r\n\r\n")
    request = head + b"\r\nconnection: close" + sep + rest
    timeout = min(_MAX_SECONDS, sidecar.options.request_timeout)
    try:
        async with asyncio.timeout(timeout):
            status, body = await _exchange(sidecar, target, request)
    except (OSError, TimeoutError, ssl.SSLError, RemoteProtocolError, PeerIdentityError) as exc:
        log.debug("mirror to %s failed: %s", target, exc)
        status, body = 502, b""
    return MirrorResult(subset, status, body, loop.time() - start)


async def _exchange(sidecar: Sidecar, target: UpstreamTarget, request: bytes) -> tuple[int, bytes]:
    ctx = sidecar.identity.client_context
    reader, writer = await asyncio.open_connection(
        target.host, target.port, ssl=ctx, server_hostname=target.server_name or ""
    )
    try:
        sslobj = writer.get_extra_info("ssl_object")
        peer = peer_identity(sslobj, sidecar.pool.trust_domain())
        if peer.uri not in target.identities:
            raise PeerIdentityError(f"{target} presented {peer.uri}")
        writer.write(request)
        await writer.drain()
        parser = ResponseParser()
        parser.expect(request.startswith(b"HEAD "))
        status = 0
        parts: list[bytes] = []
        size = 0
        while True:
            chunk = await reader.read(65536)
            events = parser.feed(chunk) if chunk else parser.eof()
            for ev in events:
                if isinstance(ev, ResponseHead) and ev.status >= 200:
                    status = ev.status
                elif isinstance(ev, Data):
                    size += len(ev.data)
                    if size <= _MAX_BODY:
                        parts.append(ev.data)
                elif isinstance(ev, EndOfMessage) and status:
                    return status, b"".join(parts)
            if not chunk:
                return (status or 502), b"".join(parts)
    finally:
        writer.close()
