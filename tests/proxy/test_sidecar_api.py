"""The Sidecar object as the control-plane client drives it, in-process over real sockets:
identity rotation reaches new connections only, a bad snapshot is refused (NACK) and the old
one keeps serving, the admin endpoints show state without secrets."""

from __future__ import annotations

import asyncio
import json
import ssl
from pathlib import Path

import pytest
import uvloop
from cryptography import x509

from meshward.config.snapshot import ServiceEntry
from meshward.proxy import Sidecar, SidecarOptions, SnapshotRejected
from meshward.tls import IdentityError
from tests.support.sidecar import SvidFiles, issue_svid, make_snapshot

pytestmark = pytest.mark.e2e

MESH = {"defaultPolicy": "allow"}


async def _app(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A minimal keep-alive app: answers every request with the XFCC it saw."""
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            xfcc = b""
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"x-forwarded-client-cert:"):
                    xfcc = line.split(b":", 1)[1].strip()
            body = json.dumps({"xfcc": xfcc.decode()}).encode()
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        writer.close()


async def _request(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, path: str
) -> tuple[int, bytes]:
    writer.write(f"GET {path} HTTP/1.1\r\nHost: chat.llm\r\n\r\n".encode())
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    status = int(head.split(b" ", 2)[1])
    length = next(
        int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")
    )
    return status, await asyncio.wait_for(reader.readexactly(length), 10)


def _client_ctx(svid: SvidFiles) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.load_verify_locations(svid.bundle)
    ctx.load_cert_chain(svid.cert, svid.key)
    return ctx


def _serial(writer: asyncio.StreamWriter) -> int:
    der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    return x509.load_der_x509_certificate(der).serial_number


def _files(svid: SvidFiles) -> tuple[bytes, bytes, bytes]:
    return svid.cert.read_bytes(), svid.key.read_bytes(), svid.bundle.read_bytes()


def test_rotation_snapshot_swap_and_admin(tmp_path: Path) -> None:
    first = issue_svid(tmp_path / "a", "llm/chat")
    second = issue_svid(tmp_path / "b", "llm/chat")
    caller = issue_svid(tmp_path / "caller", "web/webapp")

    async def main() -> None:
        app = await asyncio.start_server(_app, "127.0.0.1", 0)
        app_port = app.sockets[0].getsockname()[1]
        sidecar = Sidecar(SidecarOptions(app=("127.0.0.1", app_port)))
        with pytest.raises(RuntimeError):
            await sidecar.start()  # no identity or snapshot yet
        sidecar.set_identity(*_files(first))
        sidecar.set_snapshot(make_snapshot("llm/chat", mesh=MESH, generation=1))
        await sidecar.start()
        assert sidecar.runtime.metrics_registry is sidecar.runtime_registry
        host, port = sidecar.inbound_address
        try:
            r1, w1 = await asyncio.open_connection(host, port, ssl=_client_ctx(caller))
            status, body = await _request(r1, w1, "/one")
            assert status == 200 and caller.spiffe_id.uri in json.loads(body)["xfcc"]
            old_serial = _serial(w1)

            # rotation: new connections get the new certificate, the open one keeps working
            info = sidecar.set_identity(*_files(second))
            assert info.serial != old_serial
            r2, w2 = await asyncio.open_connection(host, port, ssl=_client_ctx(caller))
            assert _serial(w2) == info.serial
            assert (await _request(r2, w2, "/two"))[0] == 200
            assert (await _request(r1, w1, "/one-again"))[0] == 200
            assert _serial(w1) == old_serial

            # unusable identity material is refused and the current one stays
            with pytest.raises(IdentityError):
                sidecar.set_identity(b"not a certificate", b"", b"")
            assert sidecar.identity.info.serial == info.serial

            # an unusable endpoint is skipped (and counted), never the whole snapshot (security
            # review finding 1: one bad registration froze config distribution mesh-wide)
            broken = make_snapshot(
                "llm/chat",
                mesh=MESH,
                generation=2,
                services=[
                    ServiceEntry("x", "llm", ("not-an-address",), ("spiffe://demo.local/ns/llm/sa/x",))
                ],
            )
            sidecar.set_snapshot(broken)
            assert sidecar.config.generation == 2 and len(sidecar.config.routes.skipped) == 1
            assert (await _request(r2, w2, "/still"))[0] == 200
            # a snapshot that cannot be taken is refused (NACK); generation 2 keeps serving
            with pytest.raises(SnapshotRejected) as rejected:
                sidecar.set_snapshot(make_snapshot("ml/other", mesh=MESH, generation=3))
            assert rejected.value.generation == 3 and sidecar.config.generation == 2
            sidecar.set_snapshot(make_snapshot("llm/chat", mesh=MESH, generation=4))
            assert sidecar.config.generation == 4

            # admin: ready, config dump without key material, prometheus counters
            ah, ap = sidecar.admin_address
            ar, aw = await asyncio.open_connection(ah, ap)
            status, dump = await _request(ar, aw, "/config_dump")
            doc = json.loads(dump)
            assert status == 200 and doc["generation"] == 4 and doc["ready"] is True
            assert doc["identity"]["spiffe_id"] == "spiffe://demo.local/ns/llm/sa/chat"
            assert b"PRIVATE KEY" not in dump and b"BEGIN CERTIFICATE" not in dump
            status, metrics = await _request(ar, aw, "/stats/prometheus")
            assert status == 200 and b'meshward_proxy_requests_total{code="200"' in metrics
            assert b"meshward_proxy_config_rejected_total 1.0" in metrics
            assert b"meshward_proxy_config_endpoints_skipped 0.0" in metrics  # generation 4 has none
            assert (await _request(ar, aw, "/ready"))[0] == 200
            for w in (w1, w2, aw):
                w.close()
        finally:
            await sidecar.stop()
            app.close()
        assert not sidecar.ready

    uvloop.run(main())
