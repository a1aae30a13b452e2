"""``python -m meshward.dashboard --state DIR [--port N]``: the dashboard process.

Started by ``meshward dashboard`` (:mod:`meshward.dashboard.launch`); records itself in
``<state>/dashboard/server.json`` and exits by itself once the mesh it shows has stopped.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import threading
import time
from pathlib import Path

from meshward.dashboard.server import DashboardServer
from meshward.identity.keys import write_public

STOPPED_CHECKS = 3
CHECK_SECONDS = 2.0


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m meshward.dashboard")
    parser.add_argument("--state", type=Path, required=True)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    (args.state / "dashboard").mkdir(mode=0o700, parents=True, exist_ok=True)
    server = DashboardServer(args.state, args.port)
    info = args.state / "dashboard" / "server.json"
    write_public(
        info, (json.dumps({"url": server.url, "pid": os.getpid(), "started": time.time()}) + "\n").encode()
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    server.start()
    down = 0
    while not stop.wait(CHECK_SECONDS):
        down = 0 if server.view.mesh_running() else down + 1
        if down >= STOPPED_CHECKS:
            break
    server.close()
    with contextlib.suppress(OSError, ValueError):
        if json.loads(info.read_text()).get("pid") == os.getpid():
            info.unlink()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
