"""A real control plane (in this process) with real sidecar processes it feeds, for attack tests.

    with controlled_mesh(tmp_path, MESH_YAML) as mesh:
        server = mesh.sidecar("llm/chat", app_port=port)       # python -m meshward proxy --control
        client = mesh.sidecar("web/webapp")                    # outbound only
        attacker = mesh.client_as("web/webapp")                # a ControlClient with a minted SVID

Everything a sidecar process gets is what ``meshward up`` gives it: a join token in its
environment, the bundle, the control plane's URL. Teardown kills every process group.
"""

from __future__ import annotations

import contextlib
import json
import os
import ssl
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from meshward.control.client import ControlClient, operator_client
from meshward.control.server import ControlPlane
from meshward.identity.bootstrap import init_mesh
from meshward.identity.issuance import IdentityService, IssuedSvid
from meshward.identity.state import MeshState
from meshward.tls.contexts import client_context_files
from tests.support.proc import PYTHON, Proc, spawn, wait_for

__all__ = ["CHAT_FOR_WEBAPP", "ControlledMesh", "MeshSidecar", "controlled_mesh", "webapp_chat_policy"]


def webapp_chat_policy(name: str, action: str) -> str:
    """An AuthorizationPolicy on llm/chat with one rule: from web/webapp, ``action``."""
    return textwrap.dedent(
        f"""\
        apiVersion: meshward.dev/v1alpha1
        kind: AuthorizationPolicy
        metadata: {{name: {name}, namespace: llm}}
        spec:
          selector: {{matchLabels: {{app: chat}}}}
          action: {action}
          rules: [{{from: [{{source: {{principals: ["demo.local/ns/web/sa/webapp"]}}}}]}}]
        """
    )


#: Two workloads, llm/chat and web/webapp, and a policy letting the webapp call the chat.
CHAT_FOR_WEBAPP = textwrap.dedent(
    """\
        apiVersion: meshward.dev/v1alpha1
        kind: Workload
        metadata: {name: chat, namespace: llm, labels: {app: chat}}
        spec: {port: 9000}
        ---
        apiVersion: meshward.dev/v1alpha1
        kind: Workload
        metadata: {name: webapp, namespace: web, labels: {app: webapp}}
        spec: {port: 9001}
        ---
        """
) + webapp_chat_policy("webapp-chat", "ALLOW")


@dataclass
class MeshSidecar:
    proc: Proc
    info: dict[str, Any]

    @property
    def inbound(self) -> tuple[str, int]:
        host, _, port = str(self.info["inbound"]).rpartition(":")
        return host.strip("[]"), int(port)

    @property
    def proxy_url(self) -> str:
        return f"http://{self.info['outbound']}"

    def metrics(self) -> str:
        """The sidecar's Prometheus metrics (its admin listener)."""
        with httpx.Client(trust_env=False, timeout=5) as http:
            return http.get(f"http://{self.info['admin']}/stats/prometheus").text


@dataclass
class ControlledMesh:
    state: MeshState
    plane: ControlPlane
    directory: Path
    procs: list[Proc] = field(default_factory=list)

    @property
    def identity(self) -> IdentityService:
        return self.plane.service.identity

    def operator(self) -> ControlClient:
        client = operator_client(self.state)
        assert client is not None
        return client

    def apply(self, text: str) -> int:
        with self.operator() as op:
            generation: int = op.request("POST", "/v1/config/apply", {"text": text})[1]["generation"]
        return generation

    def sidecar(self, identity: str, app_port: int | None = None, workers: int = 1) -> MeshSidecar:
        """A real sidecar process for ``identity`` (NS/NAME), joined with a token, ready."""
        name = identity.replace("/", "-")
        directory = self.directory / name
        ready = self.directory / f"{name}.ready.json"
        bundle = self.directory / "bundle.pem"
        bundle.write_bytes(self.state.bundle_pem())
        args = [PYTHON, "-m", "meshward", "proxy", "--control", self.plane.url, "--bundle", str(bundle)]
        args += ["--id", identity, "--dir", str(directory), "--ready-file", str(ready)]
        if app_port is not None:
            args += ["--app", f"127.0.0.1:{app_port}"]
        if workers > 1:
            args += ["--workers", str(workers)]
        env = dict(os.environ, MESHWARD_TOKEN=self.identity.create_token(identity))
        proc = spawn(args, self.directory / f"{name}.log", env=env)
        self.procs.append(proc)

        def started() -> dict[str, Any] | None:
            if not proc.alive():
                raise AssertionError(f"sidecar {identity} exited:\n{proc.output()}")
            return json.loads(ready.read_text()) if ready.exists() else None

        return MeshSidecar(proc, wait_for(started, 30, what=f"sidecar {identity}"))

    def mint(self, identity: str) -> tuple[IssuedSvid, Path]:
        """A fresh SVID (key made here) for ``identity``, as files in a directory of its own."""
        out = (
            self.directory
            / "minted"
            / f"{identity.replace('/', '-')}-{len(self.procs)}-{os.urandom(3).hex()}"
        )
        return self.identity.mint(identity, out), out

    def tls_as(self, svid_dir: Path) -> ssl.SSLContext:
        """A client context presenting the SVID in ``svid_dir`` (the mesh's one builder)."""
        return client_context_files(self.state.bundle_pem(), svid_dir / "cert.pem", svid_dir / "key.pem")

    def client_as(self, svid_dir: Path) -> ControlClient:
        return ControlClient(
            self.plane.url,
            self.state.trust_domain,
            self.state.bundle_pem(),
            svid_dir / "cert.pem",
            svid_dir / "key.pem",
        )

    def acked(self, sidecar: str, generation: int) -> bool:
        with self.operator() as op:
            for s in op.request("GET", "/v1/status")[1]["sidecars"]:
                ack = s.get("ack") or {}
                if (
                    s["sidecar"] == sidecar
                    and ack.get("status") == "ACK"
                    and ack.get("generation", 0) >= generation
                ):
                    return True
        return False


@contextlib.contextmanager
def controlled_mesh(tmp_path: Path, config: str, **plane_options: Any) -> Iterator[ControlledMesh]:
    state = MeshState(tmp_path / "state")
    init_mesh(state, "demo.local")
    plane = ControlPlane(state, ("127.0.0.1", 0), **plane_options)
    plane.start()
    mesh = ControlledMesh(state, plane, tmp_path)
    try:
        if config:
            mesh.apply(config)
        yield mesh
    finally:
        for proc in mesh.procs:
            proc.stop()
        plane.close()
