"""The sidecar process: ``meshward proxy --bootstrap FILE | --control URL [--workers N]``.

One program for every sidecar (and gateway) Meshward runs; :func:`run_sidecar` is its main
(``meshward.cli.commands.proxy`` only parses the command line). Where its identity and config
come from is the :class:`SidecarProcess`'s ``source``:

- a :class:`~meshward.proxy.bootstrap.Bootstrap` (a static file: tests, demos, no control plane);
- a :class:`ControlSource`: the control agent (:mod:`meshward.proxy.controlclient`) runs as tasks
  on the sidecar's event loop — identity (cached SVID, or token → key + CSR → SVID) and config
  (from the control plane, or the cached last good one) first, then the listeners; then the
  inbound address is registered, the audit shipper and detection reporter started, and the
  ready file written. ``meshward up`` (:mod:`meshward.mesh.workload`), ``meshward run`` and
  the gateways (``gateway=True``: the inbound listener faces the outside as the ``Gateway``
  resource says) start it this way. The join token comes in ``$MESHWARD_TOKEN``, never on the
  command line.

With ``workers`` N > 1 the parent resolves free ports (placeholder SO_REUSEPORT sockets), forks
N workers that each bind the same ports, waits until every worker is listening, closes its
placeholders (so the kernel only spreads connections over workers), then announces the
addresses. Worker 0 also serves the admin listener. Fed by the control plane, every worker runs
its own agent (a sidecar instance of its own: ``<sidecar-id>#w<N>`` for N > 0, each ACKing
what it compiled, so a generation is in force once all workers said so); only worker 0
registers the shared inbound address. The parent obtains the SVID first, so workers start from
the cache and no join token is spent twice.

The ready file (and stdout) get one JSON line: pid, identity, generation, the listeners'
addresses, ``workers`` and, with N > 1, ``worker_pids``. SIGTERM/SIGINT, or the exit of
``parent_pid``, stop it (the inbound is unregistered first); a worker still running
``STOP_GRACE`` seconds after its SIGTERM is killed.

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
import shutil
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from meshward.identity.spiffe import SpiffeId
from meshward.native import status as native_status
from meshward.proxy.bootstrap import Bootstrap
from meshward.proxy.listener import bind_socket
from meshward.proxy.options import SidecarOptions
from meshward.proxy.sidecar import Sidecar

if TYPE_CHECKING:  # the control agent is imported only by a sidecar fed by the control plane
    from meshward.proxy.controlclient import AgentConfig, ControlAgent

__all__ = [
    "ControlSource",
    "SidecarProcess",
    "SidecarStartError",
    "control_source",
    "run_sidecar",
    "sidecar_process",
]

log = logging.getLogger("meshward.sidecar")

Report = Callable[[dict[str, Any]], None]
STOP_GRACE = 10.0  # seconds a worker has to stop (unregister, close) after SIGTERM


class SidecarStartError(Exception):
    """The sidecar cannot start; the message says why. ``usage``: the caller's words were wrong
    (an unreadable bundle, a bad address) rather than the files or the control plane."""

    def __init__(self, message: str, usage: bool = False) -> None:
        super().__init__(message)
        self.usage = usage


@dataclass(frozen=True)
class ControlSource:
    """A sidecar fed by the control plane at ``url``."""

    url: str
    bundle_pem: bytes  # verifies the control plane at first contact
    identity: SpiffeId
    workload: str  # NS/NAME of the Workload
    sidecar_id: str  # unique among sidecars (NS/NAME or NS/NAME#INSTANCE)
    directory: Path  # SVID and config cache
    token: str | None = None  # the join token (needed only without a valid cached SVID)
    gateway: bool = False  # ingress gateway mode

    def agent_config(self, worker: int = 0) -> AgentConfig:
        """The agent of worker ``worker``: worker 0 is the sidecar itself, others are instances."""
        from meshward.proxy.controlclient import AgentConfig

        sidecar_id, directory = self.sidecar_id, self.directory
        if worker:
            sidecar_id, directory = f"{sidecar_id}#w{worker}", directory / f"worker-{worker}"
        return AgentConfig(
            control_url=self.url,
            identity=self.identity,
            workload=self.workload,
            sidecar_id=sidecar_id,
            directory=directory,
            bootstrap_bundle_pem=self.bundle_pem,
            token=self.token,
            unregister_on_stop=worker > 0,
        )


def control_source(
    *,
    url: str,
    bundle: Path,
    identity: str,
    directory: Path,
    workload: str | None = None,
    sidecar_id: str | None = None,
    token: str | None = None,
    gateway: bool = False,
) -> ControlSource:
    """A :class:`ControlSource` from the command line's words: ``identity`` in any spelling (the
    short form takes the trust domain of the bundle's root); ``workload`` defaults to the
    identity's NS/SA and ``sidecar_id`` to the workload. Raises OSError or ValueError."""
    from cryptography import x509

    from meshward.identity.authority import trust_domain_of
    from meshward.identity.spiffe import parse_identity

    bundle_pem = bundle.read_bytes()
    root = x509.load_pem_x509_certificates(bundle_pem)[0]
    sid = parse_identity(identity, trust_domain_of(root) or "")
    workload = workload or sid.short
    return ControlSource(url, bundle_pem, sid, workload, sidecar_id or workload, directory, token, gateway)


@dataclass
class SidecarProcess:
    """What :func:`run_sidecar` runs."""

    options: SidecarOptions
    source: Bootstrap | ControlSource
    ready_file: Path | None = None
    workers: int = 1
    parent_pid: int = 0  # stop when this process is gone (0: never)


def settle_heap() -> None:
    """Once serving: everything loaded so far lives as long as the process, so keep it out of
    the collector's scans, and collect young objects less often (requests and compiled
    generations make many short-lived objects)."""
    gc.freeze()
    gc.set_threshold(20_000, 20, 20)


log = logging.getLogger("meshward.proxy")


def _write_ready(path: Path | None, info: dict[str, Any]) -> None:
    line = json.dumps({**info, "compiled": native_status().compiled}, sort_keys=True)
    print(line, flush=True)
    if path is not None:
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(line + "\n")
        os.replace(tmp, path)


def _gateway_options(sidecar: Sidecar, options: SidecarOptions) -> None:
    """Gateway mode: the inbound listener faces the outside as the ``Gateway`` resource says."""
    from meshward.gateway.filter import gateway_of

    gateway = gateway_of(sidecar.config.snapshot)
    if gateway is None:
        w = sidecar.config.snapshot.workload
        raise ValueError(f"no Gateway {w.namespace}/{w.name} in the mesh config")
    options.inbound = (gateway.spec.address, gateway.spec.port)
    if gateway.spec.tls is None:
        options.inbound_tls = "plain"
    else:
        options.inbound_tls = "server"
        options.inbound_cert = Path(gateway.spec.tls.cert_file)
        options.inbound_key = Path(gateway.spec.tls.key_file)
        from meshward.gateway.tls import public_server_context

        public_server_context(options.inbound_cert, options.inbound_key)  # refuse bad files now


async def _feed(sidecar: Sidecar, process: SidecarProcess, worker: int) -> ControlAgent | None:
    """Identity and a first config for ``sidecar``; the agent that keeps them coming, if any."""
    source = process.source
    if isinstance(source, Bootstrap):
        sidecar.set_identity(source.chain_pem, source.key_pem, source.bundle_pem)
        sidecar.set_snapshot(source.snapshot)
        return None
    from meshward.proxy.controlclient import ControlAgent

    agent = ControlAgent(source.agent_config(worker), sidecar)
    await agent.obtain_identity()
    await agent.initial_snapshot()
    if source.gateway:
        _gateway_options(sidecar, sidecar.options)
    return agent


async def _connect(sidecar: Sidecar, agent: ControlAgent, process: SidecarProcess, worker: int) -> None:
    """Register the inbound (worker 0), start the agent, and wire the parts that talk to the
    control plane over this sidecar's SVID."""
    from meshward.detection.filter import start_detection_reporter

    addresses = sidecar.addresses()
    gateway = isinstance(process.source, ControlSource) and process.source.gateway
    if gateway:  # requests the gateway accepts leave through its own outbound listener
        host, _, port = addresses["outbound"].rpartition(":")
        sidecar.route_inbound_to((host, int(port)))
    inbound = addresses.get("inbound") if process.options.app and not gateway and worker == 0 else None
    if inbound is not None:
        await agent.register(inbound)
    agent.start(inbound)
    # The audit spool (the telemetry pipeline's) ships its records to the control plane over our SVID.
    sidecar.ship_audit(agent.post_audit)
    # Egress credentials are fetched over the same mTLS identity, kept in memory only.
    sidecar.runtime.secret_fetch = agent.fetch_secret_async
    # Detection aggregates (and refused handshakes) go to the control plane the same way.
    start_detection_reporter(sidecar.runtime, sidecar.stats, agent.post_json_async)


async def _serve(process: SidecarProcess, worker: int, admin: bool, report: Report) -> None:
    sidecar = Sidecar(process.options)
    agent = await _feed(sidecar, process, worker)
    await sidecar.start(admin=admin)
    if agent is not None:
        await _connect(sidecar, agent, process, worker)
    settle_heap()
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
    report(info)
    while not stop.is_set():
        if process.parent_pid and os.getppid() != process.parent_pid:
            log.warning("parent %d is gone: stopping", process.parent_pid)
            break
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.5)
    if profiler is not None and profile_path:
        profiler.disable()
        profiler.dump_stats(f"{profile_path}.{os.getpid()}")
    if agent is not None:
        await agent.stop()
    await sidecar.stop()


def sidecar_process(
    *,
    bootstrap: Path | None = None,
    control: str | None = None,
    bundle: Path | None = None,
    identity: str | None = None,
    directory: Path | None = None,
    workload: str | None = None,
    sidecar_id: str | None = None,
    token: str | None = None,
    gateway: bool = False,
    listeners: dict[str, str | None] | None = None,
    ready_file: Path | None = None,
    workers: int = 1,
    parent_pid: int = 0,
) -> SidecarProcess:
    """A :class:`SidecarProcess` from a command line's words: a ``bootstrap`` file, or a
    ``control`` URL with ``bundle``, ``identity`` and ``directory``; ``listeners`` (``app``,
    ``inbound``, ``outbound``, ``admin`` → HOST:PORT) override the file's. Raises
    :class:`SidecarStartError`."""
    from meshward.proxy.bootstrap import BootstrapError, load_bootstrap
    from meshward.proxy.options import parse_address

    if not 1 <= workers <= 64:
        raise SidecarStartError("--workers must be between 1 and 64", usage=True)
    source: Bootstrap | ControlSource
    try:
        if bootstrap is not None:
            source = load_bootstrap(bootstrap)
            options = source.options
        else:
            given = {"--control": control, "--bundle": bundle, "--id": identity, "--dir": directory}
            missing = [flag for flag, value in given.items() if value is None]
            if missing or control is None or bundle is None or identity is None or directory is None:
                raise SidecarStartError(f"a control-fed sidecar needs {', '.join(missing)}", usage=True)
            options = SidecarOptions(state_dir=directory)
            source = control_source(
                url=control,
                bundle=bundle,
                identity=identity,
                directory=directory,
                workload=workload,
                sidecar_id=sidecar_id,
                token=token,
                gateway=gateway,
            )
        for name, address in (listeners or {}).items():
            if address:
                setattr(options, name, parse_address(address))
    except BootstrapError as exc:
        raise SidecarStartError(str(exc)) from exc
    except (OSError, ValueError) as exc:
        raise SidecarStartError(str(exc), usage=True) from exc
    return SidecarProcess(options, source, ready_file, workers, parent_pid)


def run_sidecar(process: SidecarProcess) -> int:
    """Run the sidecar until stopped; the exit code. Raises :class:`SidecarStartError` when it
    cannot start (no identity or config, a refused snapshot, a listener that cannot bind)."""
    import uvloop

    from meshward.proxy.compiled import SnapshotRejected
    from meshward.proxy.controlclient import IdentityError as NoIdentity
    from meshward.tls.identity import IdentityError

    native = native_status()  # pure Python is slower: say so where a default log level shows it
    (log.info if native.compiled else log.warning)(
        "compiled: %s (%s)", str(native.compiled).lower(), native.reason
    )
    try:
        if process.workers <= 1:
            ready = process.ready_file
            uvloop.run(_serve(process, 0, True, lambda info: _write_ready(ready, {**info, "workers": 1})))
            return 0
        if isinstance(process.source, ControlSource):
            _prepare_workers(process.source, process.workers)
        return _run_workers(process)
    except (NoIdentity, IdentityError, SnapshotRejected, ValueError, OSError) as exc:
        raise SidecarStartError(str(exc)) from exc


def _prepare_workers(source: ControlSource, workers: int) -> None:
    """Fed by the control plane: obtain the SVID once (spending the join token), and give every
    worker's cache directory a copy, so each starts from a valid cached SVID."""
    import uvloop

    from meshward.proxy.controlclient import ControlAgent

    class _IdentityOnly:
        def set_identity(self, chain_pem: bytes, key_pem: bytes, bundle_pem: bytes) -> None:
            pass

        def compile(self, snapshot: Any) -> Any:
            raise NotImplementedError

        def apply(self, compiled: Any) -> None:
            raise NotImplementedError

    agent = ControlAgent(source.agent_config(0), _IdentityOnly())
    uvloop.run(agent.obtain_identity())
    for worker in range(1, workers):
        directory = source.agent_config(worker).directory
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        for name in ("svid.pem", "bundle.pem"):
            shutil.copy2(source.directory / name, directory / name)


def _run_workers(process: SidecarProcess) -> int:
    opts = process.options
    holders = [bind_socket(*opts.inbound, reuse_port=True), bind_socket(*opts.outbound, reuse_port=True)]
    opts.inbound = (opts.inbound[0], holders[0].getsockname()[1])
    opts.outbound = (opts.outbound[0], holders[1].getsockname()[1])
    opts.reuse_port = True
    read_fd, write_fd = os.pipe()
    children: list[int] = []
    for index in range(process.workers):
        pid = os.fork()
        if pid == 0:  # worker
            os.close(read_fd)
            for h in holders:
                h.close()
            code = 0

            def report(info: dict[str, Any]) -> None:
                os.write(write_fd, (json.dumps(info) + "\n").encode())

            try:
                import uvloop

                # a worker follows its own parent (which follows ``parent_pid``)
                worker = replace(process, options=replace(opts), parent_pid=os.getppid())
                uvloop.run(_serve(worker, index, index == 0, report))
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
            if len(infos) == process.workers:
                break
    for h in holders:
        h.close()
    if len(infos) < process.workers:
        _stop_children(children)
        print("meshward proxy: a worker failed to start", file=sys.stderr)
        return 1
    first = next(i for i in infos if "admin" in i)
    info = {**first, "pid": os.getpid(), "workers": process.workers, "worker_pids": children}
    info["generation"] = min(int(i.get("generation") or 0) for i in infos)
    _write_ready(process.ready_file, info)
    stopping = False

    stop_deadline = 0.0  # once stopping: workers still running then are killed

    def stop() -> None:
        nonlocal stopping, stop_deadline
        if not stopping:
            stopping, stop_deadline = True, time.monotonic() + STOP_GRACE
            _stop_children(children, wait=False)

    signal.signal(signal.SIGTERM, lambda _signum, _frame: stop())
    signal.signal(signal.SIGINT, lambda _signum, _frame: stop())
    status, remaining = 0, set(children)
    while remaining:
        try:
            pid, st = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid == 0:  # all still running: is whoever started us still there?
            if process.parent_pid and os.getppid() != process.parent_pid and not stopping:
                log.warning("parent %d is gone: stopping", process.parent_pid)
                stop()
            if stopping and time.monotonic() > stop_deadline:
                log.warning(
                    "workers %s still running %.0fs after SIGTERM: killed", sorted(remaining), STOP_GRACE
                )
                _stop_children(sorted(remaining), wait=False, sig=signal.SIGKILL)
                stop_deadline = float("inf")
            time.sleep(0.1)
            continue
        remaining.discard(pid)
        if not stopping and st:
            status = 1
    return status


def _stop_children(children: list[int], wait: bool = True, sig: signal.Signals = signal.SIGTERM) -> None:
    for pid in children:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
    if wait:
        for pid in children:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
