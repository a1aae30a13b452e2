"""Running sidecar processes: one worker, or N workers sharing ports with SO_REUSEPORT.

With N > 1 the parent resolves free ports (placeholder SO_REUSEPORT sockets), forks N workers
that each bind the same ports, waits until every worker is listening, closes its placeholders
(so the kernel only spreads connections over workers), then announces the addresses. Worker 0
also serves the admin listener. SIGTERM/SIGINT stop everything.

``MESHWARD_PROFILE=PATH`` writes a cProfile of the serving phase to ``PATH.<pid>`` at exit (used by
``bench.proxy`` to say what costs the most).
"""

from __future__ import annotations

import asyncio
import contextlib
import cProfile
import gc
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import uvloop

from meshward.native import status as native_status
from meshward.proxy.bootstrap import Bootstrap
from meshward.proxy.listener import bind_socket
from meshward.proxy.sidecar import Sidecar

__all__ = ["run_bootstrap"]

log = logging.getLogger("meshward.proxy")


def _write_ready(path: Path | None, info: dict[str, Any]) -> None:
    line = json.dumps(info, sort_keys=True)
    print(line, flush=True)
    if path is not None:
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(line + "\n")
        os.replace(tmp, path)


async def _serve(boot: Bootstrap, admin: bool, on_ready: Callable[[dict[str, Any]], None]) -> None:
    sidecar = Sidecar(boot.options)
    sidecar.set_identity(boot.chain_pem, boot.key_pem, boot.bundle_pem)
    sidecar.set_snapshot(boot.snapshot)
    await sidecar.start(admin=admin)
    # Everything loaded so far lives as long as the process: keep it out of the collector's
    # scans, and collect young objects less often (requests make many short-lived objects).
    gc.freeze()
    gc.set_threshold(20_000, 20, 20)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    info: dict[str, Any] = {
        "pid": os.getpid(),
        "identity": sidecar.identity.info.spiffe_id.uri,
        "generation": sidecar.config.generation,
        "compiled": native_status().compiled,  # the mypyc-built hot path runs (meshward.native)
        **sidecar.addresses(),
    }
    profile_path = os.environ.get("MESHWARD_PROFILE")  # a cProfile of the serving phase only
    profiler = cProfile.Profile(time.process_time) if profile_path else None
    if profiler is not None:
        profiler.enable()
    on_ready(info)
    await stop.wait()
    if profiler is not None and profile_path:
        profiler.disable()
        profiler.dump_stats(f"{profile_path}.{os.getpid()}")
    await sidecar.stop()


def run_bootstrap(boot: Bootstrap, ready_file: Path | None, workers: int = 1) -> int:
    native = native_status()  # pure Python is slower: say so where a default log level shows it
    (log.info if native.compiled else log.warning)(
        "compiled: %s (%s)", str(native.compiled).lower(), native.reason
    )
    if workers <= 1:
        uvloop.run(_serve(boot, True, lambda info: _write_ready(ready_file, {**info, "workers": 1})))
        return 0
    return _run_workers(boot, ready_file, workers)


def _run_workers(boot: Bootstrap, ready_file: Path | None, workers: int) -> int:
    opts = boot.options
    holders = [bind_socket(*opts.inbound, reuse_port=True), bind_socket(*opts.outbound, reuse_port=True)]
    opts.inbound = (opts.inbound[0], holders[0].getsockname()[1])
    opts.outbound = (opts.outbound[0], holders[1].getsockname()[1])
    opts.reuse_port = True
    read_fd, write_fd = os.pipe()
    children: list[int] = []
    for index in range(workers):
        pid = os.fork()
        if pid == 0:  # worker
            os.close(read_fd)
            for h in holders:
                h.close()
            code = 0

            def report(info: dict[str, Any]) -> None:
                os.write(write_fd, (json.dumps(info) + "\n").encode())

            try:
                uvloop.run(_serve(boot, index == 0, report))
            except BaseException as exc:  # a worker must never return into the parent's code
                print(f"meshward proxy worker {index}: {exc}", file=sys.stderr)
                code = 1
            os._exit(code)
        children.append(pid)
    os.close(write_fd)
    infos: list[dict[str, Any]] = []
    with os.fdopen(read_fd) as pipe:
        for line in pipe:
            infos.append(json.loads(line))
            if len(infos) == workers:
                break
    for h in holders:
        h.close()
    if len(infos) < workers:
        _stop_children(children)
        print("meshward proxy: a worker failed to start", file=sys.stderr)
        return 1
    first = next(i for i in infos if "admin" in i)
    _write_ready(ready_file, {**first, "pid": os.getpid(), "workers": workers, "worker_pids": children})
    stopping = False

    def on_signal(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        _stop_children(children, wait=False)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    status = 0
    for pid in children:
        with contextlib.suppress(ChildProcessError):
            _, st = os.waitpid(pid, 0)
            if not stopping and st:
                status = 1
    return status


def _stop_children(children: list[int], wait: bool = True) -> None:
    for pid in children:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    if wait:
        for pid in children:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
