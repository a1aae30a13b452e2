"""Listening sockets and the accept loop: plain, STRICT mTLS, or PERMISSIVE (sniffed).

The accept loop is ours (not ``loop.create_server``) so that every accepted connection gets
the TLS context current *at that moment* (rotation reaches new connections only) and so that
PERMISSIVE mode can peek at the first byte (0x16 = a TLS handshake) to choose TLS or plaintext
per connection. With ``reuse_port`` several worker processes bind the same port and the kernel
spreads connections over them (SO_REUSEPORT).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from collections.abc import Callable

from meshward.proxy.stats import ProxyStats

__all__ = ["Listener", "bind_socket"]

log = logging.getLogger("meshward.proxy.listener")

_TLS_HANDSHAKE = 0x16
_ACCEPT_BATCH = 64


def bind_socket(host: str, port: int, reuse_port: bool = False, backlog: int = 1024) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(backlog)
    sock.setblocking(False)
    return sock


class Listener:
    """Accepts connections and hands them to ``factory`` (TLS decided per connection).

    ``tls`` returns the server context to use now, or None for a plain listener;
    ``permissive`` says whether plaintext is accepted too (checked per connection).
    """

    def __init__(
        self,
        name: str,
        sock: socket.socket,
        factory: Callable[[], asyncio.Protocol],
        stats: ProxyStats,
        tls: Callable[[], ssl.SSLContext] | None = None,
        permissive: Callable[[], bool] = lambda: False,
        handshake_timeout: float = 10.0,
    ) -> None:
        self.name = name
        self.sock = sock
        self.factory = factory
        self.stats = stats
        self.tls = tls
        self.permissive = permissive
        self.handshake_timeout = handshake_timeout
        self.loop = asyncio.get_running_loop()
        self.tasks: set[asyncio.Task[None]] = set()
        self.sniffing: dict[int, tuple[socket.socket, asyncio.TimerHandle]] = {}
        addr = sock.getsockname()
        self.address: tuple[str, int] = (str(addr[0]), int(addr[1]))
        self.loop.add_reader(sock.fileno(), self._accept)

    def _accept(self) -> None:
        for _ in range(_ACCEPT_BATCH):
            try:
                conn, _addr = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # EMFILE and friends: log, keep listening
                log.warning("%s: accept failed: %s", self.name, exc)
                return
            conn.setblocking(False)
            if conn.family in (socket.AF_INET, socket.AF_INET6):
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.tls is None:
                self._start(conn, None)
            elif self.permissive():
                self._sniff(conn)
            else:
                self._start(conn, self.tls())

    def _start(self, conn: socket.socket, ctx: ssl.SSLContext | None) -> None:
        if ctx is None:
            task = self.loop.create_task(self._plain(conn))
        else:
            task = self.loop.create_task(self._handshake(conn, ctx))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _plain(self, conn: socket.socket) -> None:
        try:
            await self.loop.connect_accepted_socket(self.factory, conn)
        except OSError:
            conn.close()

    async def _handshake(self, conn: socket.socket, ctx: ssl.SSLContext) -> None:
        try:
            source = str(conn.getpeername()[0])  # for the auth detector, if the handshake fails
        except OSError:
            source = "unknown"
        try:
            await self.loop.connect_accepted_socket(
                self.factory, conn, ssl=ctx, ssl_handshake_timeout=self.handshake_timeout
            )
        except ssl.SSLError as refused:
            self.stats.tls_refused(source, (refused.reason or "tls_error").lower())
            log.info("%s: TLS handshake refused: %s", self.name, refused.reason or refused)
            conn.close()
        except (OSError, TimeoutError) as incomplete:
            self.stats.tls_refused(source, "handshake_incomplete")
            log.info("%s: TLS handshake did not complete: %r", self.name, incomplete)
            conn.close()

    # PERMISSIVE: look at the first byte without consuming it.
    def _sniff(self, conn: socket.socket) -> None:
        fd = conn.fileno()
        timer = self.loop.call_later(self.handshake_timeout, self._sniff_timeout, fd)
        self.sniffing[fd] = (conn, timer)
        self.loop.add_reader(fd, self._sniffed, fd)

    def _sniffed(self, fd: int) -> None:
        conn, timer = self.sniffing.pop(fd)
        timer.cancel()
        self.loop.remove_reader(fd)
        try:
            first = conn.recv(1, socket.MSG_PEEK)
        except OSError:
            first = b""
        if not first:
            conn.close()
        elif first[0] == _TLS_HANDSHAKE and self.tls is not None:
            self._start(conn, self.tls())
        else:
            try:
                self.stats.count_plaintext(str(conn.getpeername()[0]))
            except OSError:
                pass
            self._start(conn, None)

    def _sniff_timeout(self, fd: int) -> None:
        entry = self.sniffing.pop(fd, None)
        if entry is not None:
            self.loop.remove_reader(fd)
            entry[0].close()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.loop.remove_reader(self.sock.fileno())
        self.sock.close()
        for fd, (conn, timer) in list(self.sniffing.items()):
            timer.cancel()
            with contextlib.suppress(Exception):
                self.loop.remove_reader(fd)
            conn.close()
        self.sniffing.clear()
        for task in list(self.tasks):
            task.cancel()
