"""Isolation mode for real (root): network namespaces, transparent redirect, own users, teardown.

One mesh with ``isolation: netns``: a model, an allowed caller and an intruder, each in its own
namespace. The test plays each app: it runs commands inside the app's namespace as the app's
user (``ip netns exec NS setpriv --reuid UID``), with no proxy variables — a plain ``curl``, a
raw socket, a direct connection to another workload's address — and captures the bridge with
tcpdump to see that only TLS crosses it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from meshward.isolation.network import leftovers
from tests.mesh.meshctl import Mesh, processes_mentioning
from tests.support.proc import PYTHON, wait_for

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(os.geteuid() != 0, reason="isolation mode needs root (CI runs as root)"),
    pytest.mark.skipif(shutil.which("tcpdump") is None, reason="tcpdump (Debian) is installed by .ci/run"),
]

MESH = textwrap.dedent(
    """\
    apiVersion: meshward.dev/v1alpha1
    kind: Mesh
    metadata: {name: isolated}
    spec: {trustDomain: demo.local, isolation: netns}
    ---
    apiVersion: meshward.dev/v1alpha1
    kind: Workload
    metadata: {name: tiny-model, namespace: ml, labels: {app: tiny-model}}
    spec:
      command: ["python", "-m", "examples.quickstart.model", "--port", "{port}"]
      readiness: {httpGet: /health}
    ---
    apiVersion: meshward.dev/v1alpha1
    kind: Workload
    metadata: {name: webapp, namespace: web, labels: {app: webapp}}
    spec:
      command: ["python", "-m", "examples.quickstart.webapp", "--port", "{port}"]
      readiness: {httpGet: /health}
    ---
    apiVersion: meshward.dev/v1alpha1
    kind: Workload
    metadata: {name: intruder, namespace: lab, labels: {app: intruder}}
    spec:
      command: ["python", "-m", "examples.quickstart.webapp", "--port", "{port}"]
      readiness: {httpGet: /health}
    ---
    apiVersion: security.istio.io/v1
    kind: AuthorizationPolicy
    metadata: {name: webapp-only, namespace: ml}
    spec:
      selector: {matchLabels: {app: tiny-model}}
      rules:
      - from: [{source: {principals: ["web/webapp"]}}]
    """
)

RAW_CLIENT = textwrap.dedent(
    """\
    import socket, sys
    host, port, hdr = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    s = socket.create_connection((host, port), timeout=10)
    s.sendall(f"GET /v1/models HTTP/1.1\\r\\nHost: {hdr}\\r\\nConnection: close\\r\\n\\r\\n".encode())
    data = b""
    while chunk := s.recv(65536):
        data += chunk
    print(data.split(b"\\r\\n", 1)[0].decode())
    print(data.rsplit(b"\\r\\n\\r\\n", 1)[-1].decode())
    """
)


class Isolated:
    def __init__(self, mesh: Mesh, doc: dict[str, Any]) -> None:
        self.mesh = mesh
        self.w = {w["name"]: w for w in doc["workloads"]}
        run = json.loads((mesh.state / "mesh" / "run.json").read_text())
        self.tag: str = run["isolation_tag"]

    def mesh_tag(self) -> str:
        return self.tag

    def gateway(self) -> str:
        """The bridge's address: where the host's connections come from."""
        return str(self.w["tiny-model"]["address"]).rsplit(".", 1)[0] + ".1"

    def as_app(self, name: str, *cmd: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
        """Run ``cmd`` as workload ``name``'s app: in its namespace, as its user, no proxy."""
        w = self.w[name]
        env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
        uid = str(w["app_uid"])
        args = ["ip", "netns", "exec", w["netns"], "setpriv", f"--reuid={uid}", f"--regid={uid}"]
        args += ["--clear-groups", "--", *cmd]
        return subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=env)


@pytest.fixture(scope="module")
def iso(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Isolated]:
    root = tmp_path_factory.mktemp("isolation")
    (root / "mesh.yaml").write_text(MESH)
    with Mesh(root / "state").detached(root / "mesh.yaml") as mesh:
        yield Isolated(mesh, json.loads(mesh.cli("status", "--json").stdout))


def test_every_workload_has_its_own_namespace_address_and_user(iso: Isolated) -> None:
    addresses = {w["address"] for w in iso.w.values()}
    assert len(addresses) == 3 and all(a.startswith("10.") for a in addresses)
    assert len({w["app_uid"] for w in iso.w.values()}) == 3
    assert all(w["inbound"].startswith(w["address"] + ":") for w in iso.w.values())


def test_curl_without_http_proxy_goes_through_both_sidecars(iso: Isolated) -> None:
    done = iso.as_app("webapp", "curl", "-s", "-m", "10", "-X", "POST", "http://tiny-model.ml/v1/chat/completions",
                      "-d", '{"messages": [{"role": "user", "content": "hello"}]}')  # fmt: skip
    answer = json.loads(done.stdout)
    assert answer["choices"][0]["message"]["content"] == "olleh"
    assert answer["caller"].endswith("URI=spiffe://demo.local/ns/web/sa/webapp")  # mTLS, its own SVID


def test_a_raw_socket_and_a_direct_address_are_redirected_through_policy(iso: Isolated) -> None:
    model = iso.w["tiny-model"]
    ip, app_port = model["address"], model["app"].rsplit(":", 1)[1]
    for who, expected in (("webapp", "200"), ("intruder", "403")):
        by_name = iso.as_app(who, PYTHON, "-c", RAW_CLIENT, "tiny-model.ml", "80", "tiny-model.ml")
        assert by_name.stdout.split()[1] == expected, (who, by_name.stdout, by_name.stderr)
        # Straight at the model's address and port, and at its sidecar's port with a foreign Host:
        # both leave through the caller's own sidecar (SO_ORIGINAL_DST), never in plain.
        direct = iso.as_app(who, PYTHON, "-c", RAW_CLIENT, ip, app_port, f"{ip}:{app_port}")
        assert direct.stdout.split()[1] == expected, (who, direct.stdout, direct.stderr)
        sidecar = iso.as_app(who, PYTHON, "-c", RAW_CLIENT, ip, "15006", "example.com")
        assert sidecar.stdout.split()[1] == expected, (who, sidecar.stdout, sidecar.stderr)


def test_only_tls_crosses_the_bridge(iso: Isolated, tmp_path: Path) -> None:
    bridge = next(name for name in leftovers(iso.mesh_tag())["links"] if name.startswith("mwbr"))
    pcap = tmp_path / "bridge.pcap"
    dump = subprocess.Popen(["tcpdump", "-i", bridge, "-U", "-w", str(pcap), "tcp"], stderr=subprocess.PIPE)
    try:
        wait_for(lambda: pcap.exists(), timeout=10, what="tcpdump to start")
        marker = "plaintext-marker-7f3a"
        for _ in range(3):
            body = json.dumps({"messages": [{"role": "user", "content": marker}]})
            done = iso.as_app("webapp", "curl", "-s", "-m", "10", "-X", "POST",
                              "http://tiny-model.ml/v1/chat/completions", "-d", body)  # fmt: skip
            assert marker[::-1] in done.stdout
        wait_for(lambda: pcap.stat().st_size > 1000, timeout=10, what="packets in the capture")
    finally:
        dump.terminate()
        dump.wait(timeout=10)
    data = pcap.read_bytes()
    assert b"\x17\x03\x03" in data  # TLS application data records
    for plain in (marker.encode(), marker[::-1].encode(), b"POST /v1", b"HTTP/1.1"):
        assert plain not in data


def test_an_app_cannot_read_the_ca_or_another_workloads_key(iso: Isolated) -> None:
    state = iso.mesh.state
    secrets = [p for p in [*state.glob("ca/*.key"), *state.glob("sidecars/*/*")] if p.is_file()]
    assert secrets
    for path in secrets[:6]:
        done = iso.as_app("intruder", "cat", str(path))
        assert done.returncode != 0 and "Permission denied" in done.stderr, path


def test_permissive_shows_who_still_sends_plaintext(iso: Isolated, tmp_path: Path) -> None:
    permissive = tmp_path / "permissive.yaml"
    permissive.write_text(
        MESH.split("---")[0].replace("isolation: netns}", "isolation: netns, mtls: {mode: PERMISSIVE}}")
    )
    iso.mesh.cli("apply", "-f", str(permissive))
    model = iso.w["tiny-model"]
    url = f"http://{model['inbound']}/v1/models"  # plaintext, from the host: STRICT would refuse it

    def plaintext_seen() -> dict[str, int]:
        subprocess.run(["curl", "-s", "-m", "3", "--noproxy", "*", url], capture_output=True, timeout=10)
        doc = json.loads(iso.mesh.cli("status", "--json").stdout)
        found: dict[str, int] = next(w for w in doc["workloads"] if w["name"] == "tiny-model").get(
            "plaintext", {}
        )
        return found

    seen = wait_for(plaintext_seen, timeout=20, what="plaintext connections in status")
    assert set(seen) == {iso.gateway()} and seen[iso.gateway()] >= 1


def test_down_leaves_nothing_behind(iso: Isolated) -> None:
    tag = iso.mesh_tag()
    before = leftovers(tag)
    assert before["namespaces"] and before["links"] and before["etc"]
    rules = subprocess.run(["ip", "netns", "exec", before["namespaces"][0], "iptables", "-t", "nat", "-S"],
                           capture_output=True, text=True, timeout=10).stdout  # fmt: skip
    assert "MESHWARD_OUTPUT" in rules
    iso.mesh.cli("down")
    assert leftovers(tag) == {"namespaces": [], "links": [], "etc": []}
    assert processes_mentioning(str(iso.mesh.state)) == []
    for w in iso.w.values():  # no process of any app user is left
        assert subprocess.run(["pgrep", "-u", str(w["app_uid"])], capture_output=True).returncode == 1
