"""Checks from outside the mesh: what a stranger on the network gets from a sidecar.

- :func:`plaintext_probe`: a plain HTTP request over raw TCP to an inbound listener.
- :func:`openssl_probe`: ``openssl s_client`` with or without a client certificate, sending an
  HTTP request once the handshake is done.

Each probe says whether the model could have been reached and what was seen, in words.
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ProbeResult", "openssl_probe", "plaintext_probe"]

_STATUS = re.compile(rb"HTTP/1\.[01] (\d{3})")


@dataclass(frozen=True)
class ProbeResult:
    answered: bool  # an HTTP answer came back from behind the listener
    detail: str


def _request(host: str) -> bytes:
    return f"GET /v2/health/ready HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()


def plaintext_probe(address: tuple[str, int], host: str, timeout: float = 5.0) -> ProbeResult:
    """Send plain HTTP where mTLS is required."""
    received = b""
    try:
        with socket.create_connection(address, timeout=timeout) as sock:
            sock.sendall(_request(host))
            while len(received) < 4096:
                data = sock.recv(4096)
                if not data:
                    break
                received += data
    except ConnectionResetError:
        return ProbeResult(False, "connection reset, no HTTP answer")
    except TimeoutError:
        return ProbeResult(False, f"no answer within {timeout:.0f} s")
    except OSError as exc:
        return ProbeResult(False, f"connection failed: {exc.strerror or exc}")
    status = _STATUS.match(received)
    if status:
        return ProbeResult(True, f"answered HTTP {status.group(1).decode()}")
    if received[:1] == b"\x15":
        return ProbeResult(False, "TLS alert, connection closed, no HTTP answer")
    return ProbeResult(False, f"connection closed after {len(received)} bytes, no HTTP answer")


def openssl_probe(
    address: tuple[str, int],
    host: str,
    bundle: Path,
    client: tuple[Path, Path] | None = None,
    timeout: float = 10.0,
) -> ProbeResult:
    """``openssl s_client`` with ``client`` = (chain, key), or with no client certificate, then
    an HTTP request once the handshake is done."""
    openssl = shutil.which("openssl")
    if openssl is None:
        raise FileNotFoundError("openssl is not installed")
    args = [openssl, "s_client", "-connect", f"{address[0]}:{address[1]}", "-CAfile", str(bundle), "-quiet"]
    if client is not None:
        chain, key = client
        args += ["-cert", str(chain), "-cert_chain", str(chain), "-key", str(key)]
    try:
        done = subprocess.run(args, input=_request(host), capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return ProbeResult(False, f"no answer within {timeout:.0f} s")
    output = done.stdout + done.stderr
    status = _STATUS.search(done.stdout)
    if status:
        return ProbeResult(True, f"answered HTTP {status.group(1).decode()}")
    alert = re.search(rb"alert ([a-z ]+)", output)
    if alert:
        return ProbeResult(False, f"TLS alert '{alert.group(1).decode().strip()}', no HTTP answer")
    if b"unexpected eof" in output:
        return ProbeResult(False, "closed by the server, no HTTP answer")
    return ProbeResult(False, f"openssl exited {done.returncode}, no HTTP answer")
