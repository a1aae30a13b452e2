"""Driving a real local mesh from tests: the ``meshward`` CLI, status, sidecar admin, processes."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.support.proc import PYTHON, ROOT, wait_for

__all__ = ["QUICKSTART", "Mesh", "processes_mentioning"]

QUICKSTART = ROOT / "examples" / "quickstart" / "mesh.yaml"
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never through a proxy


def processes_mentioning(text: str) -> list[tuple[int, str]]:
    """Live processes whose command line contains ``text`` (e.g. a state directory)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if text in cmdline and ") Z " not in stat:  # zombies are already dead
            found.append((int(entry.name), cmdline.strip()))
    return found


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return ") Z " not in stat


class Mesh:
    """One state directory and the CLI around it."""

    def __init__(self, state: Path) -> None:
        self.state = state

    def cli(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        env.pop("MESHWARD_STATE", None)
        done = subprocess.run(
            [PYTHON, "-m", "meshward", args[0], "--state", str(self.state), *args[1:]],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and done.returncode != 0:
            raise AssertionError(f"meshward {' '.join(args)} exited {done.returncode}:\n{done.stderr}")
        return done

    def status(self) -> dict[str, Any]:
        from meshward.identity.state import MeshState
        from meshward.mesh.status import mesh_status

        return mesh_status(MeshState(self.state))

    def workload(self, name: str) -> dict[str, Any]:
        return next(w for w in self.status()["workloads"] if w["name"] == name)

    def pids(self) -> list[int]:
        doc = self.status()
        pids = [doc["control"]["pid"]] + [p for w in doc["workloads"] for p in (w["pid"], w["sidecar_pid"])]
        if doc["runner"]:
            pids.append(doc["runner"]["pid"])
        return [p for p in pids if p]

    def generations(self) -> dict[str, int]:
        """What every sidecar enforces now (its admin /config_dump)."""
        out = {}
        for w in self.status()["workloads"]:
            with _DIRECT.open(f"http://{w['admin']}/config_dump", timeout=5) as resp:
                out[w["name"]] = int(json.loads(resp.read())["generation"])
        return out

    def ask(self, question: str = "hello") -> tuple[int, dict[str, Any]]:
        """webapp → its sidecar → mTLS → tiny-model's sidecar → tiny-model."""
        app = self.workload("webapp")["app"]
        url = f"http://{app}/ask?q={urllib.parse.quote(question)}"
        try:
            with _DIRECT.open(url, timeout=15) as resp:
                return int(resp.status), json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"{}")

    def wait_generation(self, generation: int, timeout: float = 30) -> None:
        wait_for(
            lambda: all(g >= generation for g in self.generations().values()),
            timeout,
            interval=0.01,
            what=f"every sidecar at generation {generation}",
        )

    @contextlib.contextmanager
    def detached(self, mesh_file: Path) -> Iterator[Mesh]:
        """``up -f MESH_FILE --detach`` on a free control port; after the block, ``down`` (if
        still up) and every process of this state directory killed, whatever happened."""
        try:
            self.cli("up", "-f", str(mesh_file), "--detach", "--control-port", "0")
            yield self
        finally:
            if (self.state / "mesh" / "run.json").exists():
                self.cli("down", check=False)
            self.kill_everything()

    def kill_everything(self) -> None:
        """Teardown safety net: whatever still mentions this state directory."""
        for pid, _ in processes_mentioning(str(self.state)):
            try:
                os.killpg(os.getpgid(pid), signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
