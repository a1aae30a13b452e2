"""Finding 7: the control-plane client trusted the system CA store, and sidecars and the control
plane built TLS contexts two ways. Now one builder (meshward.tls.contexts), trusting the mesh
bundle only, one cipher policy — checked on real contexts and real handshakes: an impostor
control plane whose certificate comes from another CA (as a public CA's would) is refused, and
a client offering only non-ECDHE or pre-1.2 TLS gets no connection."""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from meshward.control.client import ControlClient, ControlUnavailable
from meshward.identity.bootstrap import init_mesh
from meshward.identity.issuance import IdentityService
from meshward.identity.state import MeshState
from meshward.tls.contexts import client_context, client_context_files, server_context, server_context_files
from meshward.tls.control import control_id
from tests.security.controlled_mesh import ControlledMesh, controlled_mesh

pytestmark = pytest.mark.e2e


@pytest.fixture
def mesh(tmp_path: Path) -> Iterator[ControlledMesh]:
    with controlled_mesh(tmp_path, "") as m:
        yield m


def test_every_context_trusts_the_bundle_only_with_one_cipher_policy(mesh: ControlledMesh) -> None:
    bundle = mesh.state.bundle_pem()
    _, svid = mesh.mint("web/webapp")
    chain, key = (svid / "cert.pem").read_bytes(), (svid / "key.pem").read_bytes()
    contexts = {
        "control client": ControlClient(mesh.plane.url, "demo.local", bundle)._context,
        "control server": mesh.plane.ssl_context,
        "sidecar server": server_context(chain, key, bundle),
        "sidecar client": client_context(chain, key, bundle),
        "files client": client_context_files(bundle, svid / "cert.pem", svid / "key.pem"),
        "files server": server_context_files(svid / "cert.pem", svid / "key.pem", svid / "bundle.pem"),
    }
    roots = bundle.count(b"BEGIN CERTIFICATE")
    ciphers = {name: sorted(c["name"] for c in ctx.get_ciphers()) for name, ctx in contexts.items()}
    for name, ctx in contexts.items():
        assert ctx.cert_store_stats()["x509_ca"] == roots, name  # no system roots (144 before)
        assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2, name
        assert ciphers[name] == ciphers["sidecar server"], name
    tls12 = [c for c in ciphers["sidecar server"] if not c.startswith("TLS_")]
    assert tls12 and all(c.startswith("ECDHE-") and ("GCM" in c or "CHACHA20" in c) for c in tls12)


def test_an_impostor_control_plane_from_another_ca_is_refused(mesh: ControlledMesh, tmp_path: Path) -> None:
    # Another CA (a stand-in for any CA the system store would have trusted) issues the control
    # plane's exact SPIFFE ID; a sidecar's control client must not connect to it.
    other = MeshState(tmp_path / "other")
    init_mesh(other, "demo.local")
    with IdentityService(other) as ids:
        ids.mint(control_id("demo.local"), tmp_path / "impostor", system=True)
    ctx = server_context_files(
        tmp_path / "impostor" / "cert.pem",
        tmp_path / "impostor" / "key.pem",
        tmp_path / "impostor" / "bundle.pem",
    )
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        listener.settimeout(10)
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        try:
            with ctx.wrap_socket(conn, server_side=True):
                pass
        except (OSError, ssl.SSLError):
            pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    port = listener.getsockname()[1]
    try:
        with (
            ControlClient(f"https://127.0.0.1:{port}", "demo.local", mesh.state.bundle_pem()) as client,
            pytest.raises(ControlUnavailable, match="certificate verify failed"),
        ):
            client.request("GET", "/healthz")
    finally:
        listener.close()
        thread.join(10)


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1_1 is deprecated:DeprecationWarning")
@pytest.mark.parametrize("weak", ["rsa-kx", "tls1.1"])
def test_weak_clients_get_no_connection_to_the_control_plane(mesh: ControlledMesh, weak: str) -> None:
    host, port = mesh.plane.url.removeprefix("https://").rsplit(":", 1)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    if weak == "rsa-kx":  # static RSA key exchange, no forward secrecy
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        ctx.set_ciphers("AES128-GCM-SHA256:AES256-SHA")
    else:
        ctx.set_ciphers("ALL:@SECLEVEL=0")
        ctx.minimum_version = ctx.maximum_version = ssl.TLSVersion.TLSv1_1
    with (
        socket.create_connection((host, int(port)), timeout=5) as raw,
        pytest.raises((ssl.SSLError, OSError)),
    ):
        ctx.wrap_socket(raw).close()
    with ControlClient(mesh.plane.url, "demo.local", mesh.state.bundle_pem()) as good:
        assert good.request("GET", "/healthz")[1] == {"ok": True}
