"""A sidecar process fed by the control plane: what ``meshward up`` and ``meshward run`` start.

    python -m meshward.mesh.sidecar --control URL --bundle CA.pem --id NS/SA [--workload NS/NAME]
        --dir DIR [--app HOST:PORT] [--inbound/--outbound/--admin HOST:PORT] [--ready-file F]
        [--parent-pid PID]                       # the join token comes in $MESHWARD_TOKEN

Order: identity (cached SVID, or token → key + CSR → SVID) and config (from the control plane,
or the cached last good one) first, then the listeners; then the inbound address is registered,
the audit shipper started, and the ready file written (JSON: pid, identity, generation and
the listeners' addresses, as ``meshward proxy --ready-file`` writes it). The agent's setters
run on the sidecar's event loop. SIGTERM/SIGINT, or the parent's exit, stop it: the inbound is
unregistered first. The token never appears on the command line.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography import x509

from meshward.config.snapshot import MeshSnapshot
from meshward.identity.authority import trust_domain_of
from meshward.identity.keys import write_public
from meshward.identity.spiffe import SpiffeId, parse_identity
from meshward.proxy.controlclient import AgentConfig, ControlAgent, IdentityError

__all__ = ["main"]

log = logging.getLogger("meshward.sidecar")


class _LoopTarget:
    """Runs the sidecar's setters on its event loop (the agent calls from its own threads)."""

    def __init__(self, sidecar: Any) -> None:
        self.sidecar = sidecar
        self.loop: asyncio.AbstractEventLoop | None = None

    def _call(self, fn: Callable[[], object]) -> None:
        loop = self.loop
        if loop is None or not loop.is_running() or _running_loop() is loop:
            fn()
            return

        async def run() -> None:
            fn()

        asyncio.run_coroutine_threadsafe(run(), loop).result(timeout=30)

    def set_identity(self, chain_pem: bytes, key_pem: bytes, bundle_pem: bytes) -> None:
        self._call(lambda: self.sidecar.set_identity(chain_pem, key_pem, bundle_pem))

    def set_snapshot(self, snapshot: MeshSnapshot) -> None:
        self._call(lambda: self.sidecar.set_snapshot(snapshot))


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m meshward.mesh.sidecar",
        description="A sidecar fed by the control plane (the join token comes in $MESHWARD_TOKEN).",
    )
    p.add_argument("--control", required=True, help="control plane URL, https://HOST:PORT")
    p.add_argument("--bundle", required=True, type=Path, help="trust bundle to verify the control plane")
    p.add_argument("--id", required=True, dest="identity", help="the identity, NS/SA or spiffe://...")
    p.add_argument("--workload", help="NS/NAME of the Workload (default: the identity's NS/SA)")
    p.add_argument("--sidecar-id", help="unique among sidecars (default: the workload)")
    p.add_argument("--dir", required=True, type=Path, help="this sidecar's directory (SVID, config cache)")
    p.add_argument("--ready-file", type=Path, help="written (JSON: pid, listeners) once serving")
    p.add_argument("--parent-pid", type=int, default=0, help="exit when this process is gone")
    p.add_argument("--app", help="HOST:PORT of the app (none: client-only sidecar)")
    p.add_argument("--inbound", default="127.0.0.1:0")
    p.add_argument("--outbound", default="127.0.0.1:0")
    p.add_argument("--admin", default="127.0.0.1:0")
    p.add_argument(
        "--gateway",
        action="store_true",
        help="ingress gateway mode: listen as the Gateway resource of --workload says, route to services",
    )
    return p


def _gateway_options(sidecar: Any, options: Any) -> None:
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


def _identity(text: str, bundle_pem: bytes) -> SpiffeId:
    """``--id`` in any spelling; the short form takes the trust domain of the bundle's root."""
    root = x509.load_pem_x509_certificates(bundle_pem)[0]
    return parse_identity(text, trust_domain_of(root) or "")


async def _serve(sidecar: Any, agent: ControlAgent, target: _LoopTarget, args: argparse.Namespace) -> None:
    from meshward.detection.filter import start_detection_reporter

    loop = asyncio.get_running_loop()
    target.loop = loop
    await sidecar.start()
    addresses: dict[str, str] = sidecar.addresses()
    if args.gateway:  # requests the gateway accepts leave through its own outbound listener
        host, _, port = addresses["outbound"].rpartition(":")
        sidecar.route_inbound_to((host, int(port)))
    inbound = addresses.get("inbound") if args.app else None
    if inbound is not None:
        agent.inbound = inbound
        await loop.run_in_executor(None, agent.register_now)
    agent.start(inbound)
    # The audit spool (telemetry pipeline) ships its records to the control plane over our SVID.
    sidecar.ship_audit(agent.audit_poster())
    # Egress credentials are fetched over the same mTLS identity, kept in memory only.
    sidecar.runtime.secret_fetch = agent.fetch_secret_async
    # Detection aggregates (and refused handshakes) go to the control plane the same way.
    start_detection_reporter(sidecar.runtime, sidecar.stats, agent.post_json_async)
    info = {
        "pid": os.getpid(),
        "identity": agent.config.identity.uri,
        "generation": agent.generation,
        **addresses,
    }
    if args.ready_file is not None:
        write_public(args.ready_file, (json.dumps(info) + "\n").encode())
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    while not stop.is_set():
        if args.parent_pid and os.getppid() != args.parent_pid:
            log.warning("parent %d is gone: stopping", args.parent_pid)
            break
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.5)
    await loop.run_in_executor(None, agent.stop)
    await sidecar.stop()


def main(argv: list[str] | None = None) -> int:
    import uvloop

    from meshward.proxy.options import SidecarOptions, parse_address
    from meshward.proxy.sidecar import Sidecar

    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        bundle = args.bundle.read_bytes()
        identity = _identity(args.identity, bundle)
        options = SidecarOptions(
            app=parse_address(args.app) if args.app else None,
            inbound=parse_address(args.inbound),
            outbound=parse_address(args.outbound),
            admin=parse_address(args.admin),
            state_dir=args.dir,
        )
    except (OSError, ValueError) as exc:
        print(f"meshward sidecar: {exc}", file=sys.stderr)
        return 2
    workload = args.workload or identity.short
    config = AgentConfig(
        control_url=args.control,
        identity=identity,
        workload=workload,
        sidecar_id=args.sidecar_id or workload,
        directory=args.dir,
        bootstrap_bundle_pem=bundle,
        token=os.environ.pop("MESHWARD_TOKEN", None),
    )
    sidecar = Sidecar(options)
    target = _LoopTarget(sidecar)
    agent = ControlAgent(config, target)
    try:
        agent.obtain_identity()
        agent.initial_snapshot()
        if args.gateway:
            _gateway_options(sidecar, options)
    except (IdentityError, ValueError) as exc:
        print(f"meshward sidecar: {exc}", file=sys.stderr)
        return 1
    try:
        uvloop.run(_serve(sidecar, agent, target, args))
    except OSError as exc:
        print(f"meshward sidecar: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
