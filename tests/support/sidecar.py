"""End-to-end helpers: mint SVIDs, write bootstrap files, run sidecars as real processes.

Typical use (the app is any HTTP server you started on ``app_port``)::

    from tests.support.sidecar import mesh_pair

    with mesh_pair(tmp_path, app_port, server_policies=[policy_doc],
                   client_id="web/webapp", server_id="llm/chat") as pair:
        httpx.get(f"{pair.service_url}/v1/models", proxy=pair.proxy_url)
        # pair.service_url == "http://chat.llm"; the request goes
        # client outbound ─mTLS─▶ server inbound (filter chain) ─▶ the app

Policies are resource objects or plain documents (dicts as in YAML). The server workload has
the labels ``{"app": <service>}`` (+ ``server_labels``); the mesh defaults to Meshward's
(default-deny) unless ``default_policy="allow"``. Every process is stopped (whole process
group) when the block ends. One throwaway CA per test session (:func:`session_authority`).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from meshward.config.snapshot import MeshSnapshot, ServiceEntry, WorkloadInfo
from meshward.identity.authority import Authority, make_intermediate, make_root, pem
from meshward.identity.keys import generate_key, key_pem, write_private, write_public
from meshward.identity.spiffe import SpiffeId, parse_identity
from meshward.resources import KINDS, Resource
from meshward.resources.mesh import MeshSpec
from tests.support.proc import PYTHON, Proc, spawn, wait_for

if TYPE_CHECKING:
    import httpx
    import openai

__all__ = [
    "MeshPair",
    "SidecarProc",
    "SvidFiles",
    "issue_svid",
    "make_snapshot",
    "mesh_pair",
    "session_authority",
    "start_sidecar",
    "write_bootstrap",
]

TRUST_DOMAIN = "demo.local"


@lru_cache(maxsize=4)
def session_authority(trust_domain: str = TRUST_DOMAIN) -> Authority:
    """A throwaway CA (root + issuing intermediate), one per test session and trust domain."""
    root, root_key = make_root(trust_domain)
    inter, inter_key = make_intermediate(trust_domain, root, root_key)
    return Authority(trust_domain, root, inter, inter_key)


@dataclass(frozen=True)
class SvidFiles:
    cert: Path  # leaf + intermediate
    key: Path  # 0600
    bundle: Path  # the trust bundle (root)
    spiffe_id: SpiffeId


def issue_svid(
    directory: Path,
    identity: str,
    authority: Authority | None = None,
    ttl: dt.timedelta = dt.timedelta(hours=1),
    bundle: bytes | None = None,
) -> SvidFiles:
    """Mint an X.509-SVID for ``identity`` (``ns/sa`` or a SPIFFE URI) into ``directory``.

    ``bundle`` overrides the trust bundle written (e.g. another CA's root for wrong-CA tests).
    """
    ca = authority or session_authority()
    sid = parse_identity(identity, ca.trust_domain)
    key = generate_key()
    leaf = ca.issue(sid, key.public_key(), ttl)
    directory.mkdir(parents=True, exist_ok=True)
    files = SvidFiles(directory / "svid.pem", directory / "svid.key", directory / "bundle.pem", sid)
    write_public(files.cert, ca.chain_pem(leaf))
    write_private(files.key, key_pem(key))
    write_public(files.bundle, bundle if bundle is not None else pem(ca.root))
    return files


def _resource(doc: Resource[Any] | dict[str, Any]) -> Resource[Any]:
    if isinstance(doc, Resource):
        return doc
    kind = KINDS.get(str(doc.get("kind", "")))
    if kind is None:
        raise ValueError(f"unknown kind {doc.get('kind')!r}")
    return kind.model_validate(doc)


def make_snapshot(
    workload: str,
    service: str | None = None,
    services: Sequence[ServiceEntry] = (),
    policies: Sequence[Resource[Any] | dict[str, Any]] = (),
    labels: dict[str, str] | None = None,
    mesh: dict[str, Any] | None = None,
    trust_domain: str = TRUST_DOMAIN,
    generation: int = 1,
) -> MeshSnapshot:
    """A snapshot for workload ``ns/sa`` (its service defaults to the service account)."""
    sid = parse_identity(workload, trust_domain)
    svc = service or sid.service_account
    spec = MeshSpec.model_validate({"trustDomain": trust_domain, **(mesh or {})})
    info = WorkloadInfo(svc, sid.namespace, svc, sid.service_account, {"app": svc, **(labels or {})})
    return MeshSnapshot(
        generation=generation,
        trust_domain=trust_domain,
        mesh=spec,
        workload=info,
        services={s.host: s for s in services},
        resources=tuple(_resource(p) for p in policies),
    )


def write_bootstrap(
    path: Path,
    svid: SvidFiles,
    snapshot: MeshSnapshot,
    app: str | None = None,
    mtls: str | None = None,
    options: dict[str, Any] | None = None,
    listeners: dict[str, str] | None = None,
) -> Path:
    """Write a ``meshward proxy --bootstrap`` file (JSON); listeners default to free ports."""
    doc: dict[str, Any] = {
        "identity": {"cert": str(svid.cert), "key": str(svid.key), "bundle": str(svid.bundle)},
        "listeners": listeners
        or {"inbound": "127.0.0.1:0", "outbound": "127.0.0.1:0", "admin": "127.0.0.1:0"},
        "options": options or {},
        "snapshot": snapshot.to_json(),
    }
    if app:
        doc["app"] = app
    if mtls:
        doc["mtls"] = mtls
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2))
    return path


def _addr(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


@dataclass
class SidecarProc:
    """A running ``meshward proxy`` process and its bound listeners."""

    proc: Proc
    ready: dict[str, Any]
    inbound: tuple[str, int]
    outbound: tuple[str, int]
    admin: tuple[str, int]

    @property
    def proxy_url(self) -> str:
        """Use as HTTP_PROXY / ``proxy=`` for apps of this workload."""
        return f"http://{self.outbound[0]}:{self.outbound[1]}"

    @property
    def admin_url(self) -> str:
        return f"http://{self.admin[0]}:{self.admin[1]}"

    @property
    def inbound_port(self) -> int:
        return self.inbound[1]

    def stop(self) -> None:
        self.proc.stop()


def start_sidecar(
    bootstrap: Path, name: str = "sidecar", workers: int = 1, extra_args: Sequence[str] = ()
) -> SidecarProc:
    """Run ``meshward proxy --bootstrap`` and wait (bounded) until its listeners are bound."""
    ready_file = bootstrap.with_name(f"{name}.ready.json")
    with contextlib.suppress(FileNotFoundError):
        ready_file.unlink()
    args = [PYTHON, "-m", "meshward", "proxy", "--bootstrap", str(bootstrap), "--ready-file", str(ready_file)]
    if workers != 1:
        args += ["--workers", str(workers)]
    proc = spawn([*args, *extra_args], bootstrap.with_name(f"{name}.log"))

    def ready() -> dict[str, Any] | None:
        if not proc.alive():
            return {"exited": True}
        if not ready_file.exists():
            return None
        data: dict[str, Any] = json.loads(ready_file.read_text())
        return data

    try:
        info = wait_for(ready, timeout=60, what=f"sidecar {name} ready file")
    except BaseException:
        proc.stop()
        raise
    if info.get("exited"):
        proc.stop()
        raise RuntimeError(f"sidecar {name} exited early:\n{proc.output()}")
    return SidecarProc(proc, info, _addr(info["inbound"]), _addr(info["outbound"]), _addr(info["admin"]))


@dataclass
class MeshPair:
    """client app → client sidecar (outbound) ─mTLS─▶ server sidecar (inbound) → server app."""

    client: SidecarProc
    server: SidecarProc
    client_id: SpiffeId
    server_id: SpiffeId
    service_host: str  # "<service>.<namespace>"
    directory: Path

    @property
    def proxy_url(self) -> str:
        """The client workload's HTTP proxy (set as HTTP_PROXY / ``proxy=``)."""
        return self.client.proxy_url

    @property
    def service_url(self) -> str:
        """Base URL of the server's service as mesh clients call it, e.g. ``http://chat.llm``."""
        return f"http://{self.service_host}"

    def http_client(self, timeout: float = 10) -> httpx.Client:
        """An httpx client that sends every request through the client sidecar (``*_PROXY`` ignored)."""
        import httpx

        return httpx.Client(proxy=self.proxy_url, timeout=timeout, trust_env=False)

    def openai_client(self, timeout: float = 30) -> openai.OpenAI:
        """The OpenAI SDK, through the client sidecar, for the server's service (no retries)."""
        import openai

        return openai.OpenAI(
            base_url=f"{self.service_url}/v1",
            api_key="unused",
            http_client=self.http_client(timeout),
            max_retries=0,
        )

    def proxy_env(self) -> dict[str, str]:
        """Environment for a client process: everything through the client sidecar."""
        return {
            "HTTP_PROXY": self.proxy_url,
            "http_proxy": self.proxy_url,
            "NO_PROXY": "",
            "no_proxy": "",
        }


@contextlib.contextmanager
def mesh_pair(
    tmp_path: Path,
    app_port: int,
    server_policies: Sequence[Resource[Any] | dict[str, Any]] = (),
    client_id: str = "web/webapp",
    server_id: str = "llm/chat",
    service: str | None = None,
    server_labels: dict[str, str] | None = None,
    default_policy: str | None = None,
    mtls: str | None = None,
    server_options: dict[str, Any] | None = None,
    client_options: dict[str, Any] | None = None,
    client_policies: Sequence[Resource[Any] | dict[str, Any]] = (),
    authority: Authority | None = None,
    server_identities: Sequence[str] | None = None,
    mesh_settings: dict[str, Any] | None = None,
) -> Iterator[MeshPair]:
    """Start a server sidecar (in front of ``127.0.0.1:app_port``) and a client sidecar.

    ``service`` defaults to the server's service account. ``server_identities`` overrides the
    SPIFFE IDs the client expects from the server (wrong-identity tests). ``mesh_settings``
    are extra Mesh spec fields (e.g. ``{"pathNormalization": {"encodedSlashes": "decode"}}``).
    """
    ca = authority or session_authority()
    td = ca.trust_domain
    directory = tmp_path / f"mesh-{os.getpid()}-{len(list(tmp_path.glob('mesh-*')))}"
    server_sid = parse_identity(server_id, td)
    client_sid = parse_identity(client_id, td)
    svc = service or server_sid.service_account
    mesh: dict[str, Any] = dict(mesh_settings or {})
    if default_policy:
        mesh["defaultPolicy"] = default_policy
    if mtls:
        mesh["mtls"] = {"mode": mtls}
    started: list[SidecarProc] = []
    try:
        server_svid = issue_svid(directory / "server", server_id, ca)
        server_snap = make_snapshot(
            server_id, svc, policies=server_policies, labels=server_labels, mesh=mesh, trust_domain=td
        )
        server_boot = write_bootstrap(
            directory / "server.json",
            server_svid,
            server_snap,
            app=f"127.0.0.1:{app_port}",
            options=server_options,
        )
        server = start_sidecar(server_boot, "server")
        started.append(server)
        entry = ServiceEntry(
            svc,
            server_sid.namespace,
            (f"127.0.0.1:{server.inbound_port}",),
            tuple(server_identities) if server_identities is not None else (server_sid.uri,),
        )
        client_svid = issue_svid(directory / "client", client_id, ca)
        client_snap = make_snapshot(
            client_id, services=[entry], policies=client_policies, mesh=mesh, trust_domain=td
        )
        client_boot = write_bootstrap(
            directory / "client.json", client_svid, client_snap, options=client_options
        )
        client = start_sidecar(client_boot, "client")
        started.append(client)
        yield MeshPair(client, server, client_sid, server_sid, entry.host, directory)
    finally:
        for sc in reversed(started):
            sc.stop()
