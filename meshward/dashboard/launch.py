"""``meshward dashboard``: find this mesh's dashboard process or start one, and mint a login URL.

The dashboard is its own process (``python -m meshward.dashboard``), started on demand in its
own session (it outlives the command) and recorded in ``<state>/dashboard/server.json``; it
stops by itself once the mesh has stopped. Each call mints a new one-time login token.
"""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from meshward.control.client import pid_alive
from meshward.dashboard.auth import LoginTokens

__all__ = ["DashboardUnavailable", "find_dashboard", "login_url", "start_dashboard"]

START_TIMEOUT = 20.0


class DashboardUnavailable(Exception):
    """The dashboard could not be started (the message says why)."""


def _healthy(url: str) -> bool:
    host, _, port = url.removeprefix("http://").rpartition(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=2)
    try:
        conn.request("GET", "/healthz", headers={"Host": f"{host}:{port}"})
        return conn.getresponse().status == 200
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()


def find_dashboard(state_dir: Path) -> str | None:
    """The URL of this mesh's running dashboard, if there is one."""
    try:
        doc = json.loads((state_dir / "dashboard" / "server.json").read_text())
        url, pid = str(doc["url"]), int(doc["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return url if pid_alive(pid) and _healthy(url) else None


def start_dashboard(state_dir: Path, port: int = 0) -> str:
    """Start the dashboard process for ``state_dir``; its URL once it answers."""
    directory = state_dir / "dashboard"
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    log_path = directory / "dashboard.log"
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "meshward.dashboard", "--state", str(state_dir), "--port", str(port)],
            stdin=subprocess.DEVNULL,
            stdout=fd,
            stderr=fd,
            start_new_session=True,
        )
    finally:
        os.close(fd)
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log_path.read_text(errors="replace").strip().splitlines()[-1:] or ["no output"]
            raise DashboardUnavailable(f"the dashboard exited at once ({proc.returncode}): {tail[0]}")
        try:
            doc = json.loads((directory / "server.json").read_text())
            if int(doc["pid"]) == proc.pid and _healthy(str(doc["url"])):
                return str(doc["url"])
        except (OSError, ValueError, KeyError, TypeError):
            pass
        time.sleep(0.05)
    proc.terminate()
    raise DashboardUnavailable(f"the dashboard did not answer within {START_TIMEOUT:.0f} s (see {log_path})")


def login_url(state_dir: Path, url: str) -> str:
    """``URL/login?token=...`` with a new one-time token."""
    return f"{url}/login?token={LoginTokens(state_dir / 'dashboard').mint()}"
