"""Run the control plane in the foreground: the body of ``meshward control`` and of
``python -m meshward.control`` (one implementation; the CLI only parses arguments).

It serves the state directory's mesh until SIGINT or SIGTERM, and records its URL and pid in
``<state>/control.json`` for the CLI and ``meshward up``.
"""

from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path
from types import FrameType

__all__ = ["ControlStartError", "parse_listen", "serve_forever"]


class ControlStartError(Exception):
    """The control plane cannot start; the message says why (one line for stderr)."""


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (IPv6 hosts in brackets) as a listen address, or :class:`ControlStartError`."""
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or int(port) > 65535:
        raise ControlStartError(f"--listen: expected HOST:PORT, not {text!r}")
    return host.strip("[]"), int(port)


def serve_forever(state_path: Path, listen_text: str) -> int:
    """Serve the mesh in *state_path* on *listen_text* until SIGINT/SIGTERM; returns the exit code."""
    from meshward.control.client import read_control_info
    from meshward.control.server import ControlPlane
    from meshward.identity.state import MeshState

    listen = parse_listen(listen_text)
    state = MeshState(state_path)
    running = read_control_info(state.path)
    if running is not None:
        raise ControlStartError(
            f"a control plane already serves {state.path} (pid {running.pid}, {running.url})"
        )
    try:
        plane = ControlPlane(state, listen)
    except OSError as exc:
        if exc.errno is not None and exc.strerror:
            raise ControlStartError(f"cannot listen on {listen_text}: {exc.strerror}") from None
        raise
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    plane.start()
    print(f"meshward control: serving {state.trust_domain} on {plane.url}", file=sys.stderr, flush=True)
    try:
        while not stop.wait(3600):
            pass
    finally:
        plane.close()
    return 0
