"""``meshward run --as NS/NAME -- CMD``: one command with a temporary sidecar of that identity.

The sidecar is started first (join token → key + CSR → SVID → config), then CMD with
``HTTP_PROXY`` at the sidecar's outbound listener. CMD stays in the terminal's process group, so
Ctrl-C reaches it as usual. When CMD ends the sidecar is stopped (unlike Istio's jobs, whose
sidecar never finishes) and its files are removed; the exit code is CMD's (128+N if a signal N
ended it). The sidecar also exits by itself if this process dies.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from meshward.control.client import read_control_info
from meshward.identity.issuance import IdentityService
from meshward.identity.spiffe import SpiffeId
from meshward.identity.state import MeshState
from meshward.mesh.processes import start_child
from meshward.mesh.workload import NO_PROXY, START_TIMEOUT, MeshError, sidecar_command

__all__ = ["run_with_sidecar"]


def _unalias(state: MeshState, identity: str) -> str:
    """An identity spelled in a ``Mesh.spec.trustDomainAliases`` trust domain, as this mesh's
    (the same reading policies and ``meshward check`` give it); any other text unchanged."""
    from meshward.authz.aliases import rewrite_principal
    from meshward.config.store import ConfigStore
    from meshward.resources.mesh import Mesh

    meshes = [r for r in ConfigStore(state.db_path).resources() if isinstance(r, Mesh)]
    aliases = meshes[0].spec.trust_domain_aliases if meshes else []
    return rewrite_principal(identity, state.trust_domain, aliases) if aliases else identity


def run_with_sidecar(state: MeshState, identity: str, command: Sequence[str]) -> int:
    """Run ``command`` behind a temporary sidecar for ``identity``; return its exit code."""
    if not command:
        raise MeshError("no command to run (usage: meshward run --as NS/NAME -- CMD [ARGS...])")
    control = read_control_info(state.path)
    if control is None:
        raise MeshError(
            f"no control plane is running for {state.path} (start one with `meshward up` or `meshward control`)"
        )
    identity = _unalias(state, identity)
    with contextlib.closing(IdentityService(state)) as service:
        try:
            sid = service.identity(identity)
        except ValueError as exc:
            raise MeshError(str(exc)) from None
        sid, workload = _workload_identity(state, sid)
        token = service.create_token(sid, dt.timedelta(minutes=10))
    instance = f"run-{os.getpid()}"
    directory = state.path / "sidecars" / f"{sid.namespace}.{sid.service_account}.{instance}"
    args = sidecar_command(
        control_url=control.url,
        bundle=state.bundle_path,
        identity=sid.short,
        workload=workload,
        sidecar_id=f"{workload}#{instance}",
        directory=directory,
        app=None,
        listeners={},
        parent_pid=os.getpid(),
    )
    env = dict(os.environ, MESHWARD_TOKEN=token, PYTHONUNBUFFERED="1")
    sidecar = start_child(f"sidecar {workload}", args, directory / "sidecar.log", env)
    try:
        info = _wait_ready(sidecar.popen, directory / "ready.json", directory / "sidecar.log")
        proxy = f"http://{info['outbound']}"
        cmd_env = dict(os.environ, HTTP_PROXY=proxy, http_proxy=proxy, NO_PROXY=NO_PROXY, no_proxy=NO_PROXY)
        cmd_env.update(MESHWARD_IDENTITY=sid.uri)
        try:
            child = subprocess.Popen(list(command), env=cmd_env)
        except OSError as exc:
            raise MeshError(f"cannot run {command[0]}: {exc.strerror or exc}") from None
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # the terminal's Ctrl-C is CMD's
        try:
            code = child.wait()
        finally:
            signal.signal(signal.SIGINT, previous)
        return 128 - code if code < 0 else code
    finally:
        sidecar.stop()
        shutil.rmtree(directory, ignore_errors=True)


def _workload_identity(state: MeshState, sid: SpiffeId) -> tuple[SpiffeId, str]:
    """``NS/NAME`` naming a Workload runs as that Workload (its service account, its labels, so
    the policies selecting it apply, egress included); anything else as the identity itself."""
    from meshward.config.build import find_workload
    from meshward.config.store import ConfigStore

    resources = ConfigStore(state.db_path, sid.trust_domain).resources()
    found = find_workload(resources, sid.namespace, sid.service_account)
    if found is None:
        return sid, sid.short
    as_workload = SpiffeId(sid.trust_domain, sid.namespace, found.service_account)
    return as_workload, f"{sid.namespace}/{found.metadata.name}"


def _wait_ready(popen: subprocess.Popen[bytes], ready_file: Path, log: Path) -> Any:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if popen.poll() is not None:
            with contextlib.suppress(OSError):
                tail = " | ".join(log.read_text(errors="replace").strip().splitlines()[-3:])
                raise MeshError(f"the sidecar exited ({popen.returncode}): {tail}")
            raise MeshError(f"the sidecar exited ({popen.returncode})")
        with contextlib.suppress(OSError, ValueError):
            info = json.loads(ready_file.read_text())
            if info.get("outbound"):
                return info
        time.sleep(0.02)
    raise MeshError(f"the sidecar was not ready within {START_TIMEOUT:.0f}s")
