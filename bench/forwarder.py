"""A bare HTTP/1.1 forwarder (uvloop + httptools + ssl): the Python ceiling of ``bench.core``.

    python -m bench.forwarder --listen 127.0.0.1:8001 --upstream 127.0.0.1:8002 \\
        --cert svid.pem --key svid.key --ca bundle.pem --tls-out     # the client side
    python -m bench.forwarder --listen 127.0.0.1:8002 --upstream 127.0.0.1:80 \\
        --cert svid.pem --key svid.key --ca bundle.pem --tls-in      # the server side

What any Python sidecar must do at the least, and nothing more: parse each request (httptools),
re-emit its head from the parsed fields, forward it on a keep-alive upstream connection (one per
downstream connection, opened on the first request), parse the response to follow its framing
and pass its bytes back as they come. mTLS on the side that asks for it: the server requires and
verifies a client certificate, the client presents one and verifies the server's chain against
the same bundle (TLS 1.2 minimum, no session tickets, as the mesh's own contexts). No policy, no
telemetry, no timeouts, no pipelining: a ceiling, not a proxy.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import ssl
from typing import cast

import httptools
import uvloop

__all__ = ["client_context", "main", "serve", "server_context"]

Address = tuple[str, int]


def _context(protocol: int, cert: str, key: str, ca: str) -> ssl.SSLContext:
    ctx = ssl.SSLContext(protocol)
    ctx.load_cert_chain(cert, key)
    ctx.load_verify_locations(ca)
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_TICKET
    return ctx


def server_context(cert: str, key: str, ca: str) -> ssl.SSLContext:
    """mTLS in: our certificate, the peer's required and verified against ``ca``."""
    return _context(ssl.PROTOCOL_TLS_SERVER, cert, key, ca)


def client_context(cert: str, key: str, ca: str) -> ssl.SSLContext:
    """mTLS out: our certificate presented; the server's chain verified (no host name: a SVID
    names a SPIFFE ID, not a host)."""
    ctx = _context(ssl.PROTOCOL_TLS_CLIENT, cert, key, ca)
    ctx.check_hostname = False
    return ctx


class Upstream(asyncio.Protocol):
    """The keep-alive connection to the next hop of one downstream connection."""

    def __init__(self, down: Downstream) -> None:
        self.down = down
        self.parser = httptools.HttpResponseParser(self)

    def data_received(self, data: bytes) -> None:
        self.down.transport.write(data)  # passed through as it comes; parsed for its framing
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.down.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.down.transport.close()


class Downstream(asyncio.Protocol):
    """One client connection: requests parsed, heads re-emitted, written upstream once whole."""

    transport: asyncio.Transport

    def __init__(self, upstream: Address, tls: ssl.SSLContext | None) -> None:
        self.upstream_address = upstream
        self.tls = tls
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.headers: list[bytes] = []
        self.chunked = False
        self.out: list[bytes] = []  # what the current request sends upstream
        self.up: asyncio.Transport | None = None
        self.connecting = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.transport.write(
                b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            )
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.up is not None:
            self.up.close()

    # ---- httptools callbacks --------------------------------------------------------------------

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() == b"transfer-encoding" and b"chunked" in value.lower():
            self.chunked = True
        self.headers.append(b"%s: %s\r\n" % (name, value))

    def on_headers_complete(self) -> None:
        method = self.parser.get_method()
        self.out.append(b"%s %s HTTP/1.1\r\n%s\r\n" % (method, self.url, b"".join(self.headers)))
        self.url = b""
        self.headers = []

    def on_body(self, body: bytes) -> None:
        self.out.append(b"%x\r\n%s\r\n" % (len(body), body) if self.chunked else body)

    def on_message_complete(self) -> None:
        if self.chunked:
            self.out.append(b"0\r\n\r\n")
            self.chunked = False
        if self.up is not None:
            self.up.write(b"".join(self.out))  # one write per request
            self.out = []
        elif not self.connecting:
            self.connecting = True
            asyncio.get_running_loop().create_task(self._connect())

    async def _connect(self) -> None:
        host, port = self.upstream_address
        try:
            transport, _ = await asyncio.get_running_loop().create_connection(
                lambda: Upstream(self), host, port, ssl=self.tls
            )
        except OSError:
            self.transport.write(
                b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            )
            self.transport.close()
            return
        if self.transport.is_closing():
            transport.close()
            return
        self.up = transport
        self.connecting = False
        self.up.write(b"".join(self.out))
        self.out = []


async def serve(
    listen: Address, upstream: Address, tls_in: ssl.SSLContext | None, tls_out: ssl.SSLContext | None
) -> None:
    """Forward ``listen`` to ``upstream`` until SIGTERM/SIGINT."""
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: Downstream(upstream, tls_out), *listen, ssl=tls_in, backlog=1024
    )
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"forwarder listening on {listen[0]}:{listen[1]}", flush=True)
    await stop.wait()
    server.close()


def _address(text: str) -> Address:
    host, _, port = text.rpartition(":")
    return host, int(port)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.forwarder", description=__doc__.split("\n")[0])
    p.add_argument("--listen", type=_address, required=True)
    p.add_argument("--upstream", type=_address, required=True)
    p.add_argument("--cert")
    p.add_argument("--key")
    p.add_argument("--ca")
    p.add_argument("--tls-in", action="store_true", help="mTLS on the listening side")
    p.add_argument("--tls-out", action="store_true", help="mTLS towards the upstream")
    args = p.parse_args(argv)
    if (args.tls_in or args.tls_out) and not (args.cert and args.key and args.ca):
        p.error("--tls-in/--tls-out need --cert, --key and --ca")
    tls_in = server_context(args.cert, args.key, args.ca) if args.tls_in else None
    tls_out = client_context(args.cert, args.key, args.ca) if args.tls_out else None
    uvloop.run(serve(args.listen, args.upstream, tls_in, tls_out))


if __name__ == "__main__":
    main()
