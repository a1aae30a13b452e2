"""An impostor for the forged-identity step: a server with a valid certificate for the wrong
identity, and a caller's sidecar whose service table points the model's service at it.

:class:`ForgedServer` is a TLS server on loopback that counts the bytes of any request reaching
it. :func:`caller_sidecar` runs a stand-alone ``meshward proxy`` (static bootstrap, the same
binary as every sidecar) for ``ml/preprocessor`` in which ``fraud-model.ml`` resolves to the
impostor while still requiring fraud-model's SPIFFE ID: the sidecar must refuse the server after
the handshake, before sending a byte of the request.
"""

from __future__ import annotations

import json
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from types import TracebackType

from meshward.demo.cluster import NOT_YET, REPO, child_env
from meshward.mesh.errors import MeshError
from meshward.mesh.polling import wait_until

__all__ = ["ForgedServer", "caller_sidecar"]

TRUST_DOMAIN = "demo.local"


class ForgedServer:
    """A TLS server on loopback presenting ``cert``/``key`` (valid, but not the expected identity)."""

    def __init__(self, cert: Path, key: Path) -> None:
        self._context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._context.load_cert_chain(cert, key)
        self._sock = socket.create_server(("127.0.0.1", 0))
        self._sock.settimeout(0.2)
        self.port: int = self._sock.getsockname()[1]
        self.handshakes = 0
        self.request_bytes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="forged-server", daemon=True)

    def __enter__(self) -> ForgedServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self._stop.set()
        self._thread.join(5)
        self._sock.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                conn.settimeout(2.0)
                try:
                    with self._context.wrap_socket(conn, server_side=True) as tls:
                        self.handshakes += 1
                        data = tls.recv(65536)
                        self.request_bytes += len(data)
                        if data:  # what an impostor would do with a request it got
                            body = b'{"forged": true}'
                            tls.sendall(
                                b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
                            )
                except (OSError, ssl.SSLError):
                    continue


@contextmanager
def caller_sidecar(certs: Path, forged_port: int, workdir: Path) -> Iterator[str | None]:
    """A preprocessor sidecar (``certs``: cert.pem, key.pem, bundle.pem from ``meshward certs
    issue``) whose service table sends fraud-model.ml to ``127.0.0.1:forged_port``; yields its
    outbound proxy URL (None if it did not start)."""
    snapshot = {
        "generation": 1,
        "trust_domain": TRUST_DOMAIN,
        "mesh": {"trustDomain": TRUST_DOMAIN},
        "workload": {
            "name": "preprocessor",
            "namespace": "ml",
            "service": "preprocessor",
            "service_account": "preprocessor",
            "labels": {},
        },
        "services": [
            {
                "service": "fraud-model",
                "namespace": "ml",
                "endpoints": [f"127.0.0.1:{forged_port}"],
                "identities": [f"spiffe://{TRUST_DOMAIN}/ns/ml/sa/fraud-model"],
            }
        ],
        "resources": [],
    }
    boot = {
        "identity": {
            "cert": str(certs / "cert.pem"),
            "key": str(certs / "key.pem"),
            "bundle": str(certs / "bundle.pem"),
        },
        "listeners": {"inbound": "127.0.0.1:0", "outbound": "127.0.0.1:0", "admin": "127.0.0.1:0"},
        "snapshot": snapshot,
    }
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "bootstrap.json"
    path.write_text(json.dumps(boot))
    ready = workdir / "ready.json"
    ready.unlink(missing_ok=True)
    argv = [sys.executable, "-m", "meshward", "proxy", "--bootstrap", str(path), "--ready-file", str(ready)]
    with open(workdir / "sidecar.log", "wb") as log:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=child_env(),
            cwd=REPO,
            start_new_session=True,
        )
    try:
        info = None
        with suppress(MeshError):
            info = wait_until(
                lambda: proc.poll() is None and ready.exists() and json.loads(ready.read_text()),
                20,
                "the caller's sidecar",
                tolerate=NOT_YET,
            )
        yield f"http://{info['outbound']}" if info else None
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
