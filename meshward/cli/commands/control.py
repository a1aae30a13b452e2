"""``meshward control [--listen HOST:PORT]``: run the control plane alone, in the foreground.

It serves the state directory's mesh until SIGINT or SIGTERM, and records its URL and pid in
``<state>/control.json`` for the CLI and ``meshward up``.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from types import FrameType

from meshward.cli.errors import CliError

__all__ = ["DEFAULT_LISTEN_TEXT", "register", "run_control"]

#: ``meshward.control.server.DEFAULT_LISTEN`` as text (a test keeps them equal): the parser is
#: built without importing the control plane.
DEFAULT_LISTEN_TEXT = "127.0.0.1:15012"


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    p = sub.add_parser(
        "control",
        parents=[common],
        help="run the control plane (CA, config API, distribution)",
        description="Run the control plane of the mesh in --state, in the foreground.",
    )
    p.add_argument(
        "--listen",
        default=DEFAULT_LISTEN_TEXT,
        help="HOST:PORT to serve on (default: %(default)s; port 0 picks a free one)",
    )
    p.set_defaults(func=run_control)


def run_control(args: argparse.Namespace) -> int:
    from meshward.control.client import read_control_info
    from meshward.control.server import ControlPlane
    from meshward.identity.state import MeshState

    host, _, port = args.listen.rpartition(":")
    if not host or not port.isdigit() or int(port) > 65535:
        raise CliError(f"--listen: expected HOST:PORT, not {args.listen!r}")
    listen = (host.strip("[]"), int(port))
    state = MeshState(args.state)
    running = read_control_info(state.path)
    if running is not None:
        raise CliError(f"a control plane already serves {state.path} (pid {running.pid}, {running.url})")
    try:
        plane = ControlPlane(state, listen)
    except OSError as exc:
        if exc.errno is not None and exc.strerror:
            raise CliError(f"cannot listen on {args.listen}: {exc.strerror}") from None
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
