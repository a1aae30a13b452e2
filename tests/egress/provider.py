"""A fake external AI provider for egress tests: OpenAI-compatible, HTTPS with its OWN CA.

    with FakeProvider(tmp_path, "api.llm.example") as api:
        api.port, api.ca_path, api.seen  # what the provider received (headers, bodies)

The server is the example chat model (``examples.models.chat`` with ``--echo``: the answer is
the last user message, streaming and usage included) behind TLS on loopback, with a
certificate for ``cert_host`` signed by a CA made here (not the mesh's). ``seen`` records the
``Authorization`` header, path and body of every request, so a test can check what left the
mesh.
"""

from __future__ import annotations

import datetime as dt
import ssl
import threading
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from examples.models.chat import ChatHandler

__all__ = ["FakeProvider", "Seen", "leaf_certificate", "make_ca"]


@dataclass
class Seen:
    method: str
    path: str
    authorization: str | None
    api_key: str | None
    body: bytes


@dataclass
class _Log:
    items: list[Seen] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_ca(directory: Path, name: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate, Path]:
    """A self-signed CA; its certificate is written to ``directory/<name>-ca.pem``."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(f"{name} test CA"))
        .issuer_name(_name(f"{name} test CA"))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
        .sign(key, hashes.SHA256())
    )
    path = directory / f"{name}-ca.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key, cert, path


def leaf_certificate(directory: Path, ca_key: Any, ca: x509.Certificate, host: str) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(host))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    cert_path, key_path = directory / f"{host}.pem", directory / f"{host}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    key_path.chmod(0o600)
    return cert_path, key_path


class FakeProvider:
    """The TLS chat server in a background thread (see the module docstring)."""

    def __init__(
        self, directory: Path, cert_host: str, ca: tuple[Any, x509.Certificate, Path] | None = None
    ) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.ca_key, self.ca_cert, self.ca_path = ca or make_ca(directory, "provider")
        cert, key = leaf_certificate(directory, self.ca_key, self.ca_cert, cert_host)
        log = self.log = _Log()

        class Recording(ChatHandler):
            echo = True

            def read_body(self) -> bytes:
                body = super().read_body()
                with log.lock:
                    log.items.append(
                        Seen(
                            self.command,
                            self.path,
                            self.headers.get("Authorization"),
                            self.headers.get("api-key"),
                            body,
                        )
                    )
                return body

        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(cert, key)
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Recording)
        self.server.daemon_threads = True
        self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
        self.port = int(self.server.server_address[1])
        self._thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True
        )

    @property
    def seen(self) -> list[Seen]:
        with self.log.lock:
            return list(self.log.items)

    def __enter__(self) -> FakeProvider:
        self._thread.start()
        return self

    def __exit__(self, *exc: object | TracebackType | None) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(10)
