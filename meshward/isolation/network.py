"""Applying an :class:`~meshward.isolation.plan.IsolationPlan` with ``ip`` and ``iptables``.

Every name carries the plan's tag, so :func:`teardown` finds what a mesh made from the tag alone
(``meshward down --force`` after a ``kill -9`` of ``up``): namespaces ``mw-<tag>-N`` (deleting one
deletes its veth pair), the bridge ``mwbr<tag>``, the hosts files under ``/etc/netns/``. The
iptables rules live inside the namespaces and go with them. App users are numeric (no
``/etc/passwd`` entry), so there are none to remove.

Commands run with a bounded time and fail with :class:`IsolationError` naming the command and
what it printed.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import threading
from collections.abc import Sequence
from pathlib import Path

from meshward.isolation.plan import IsolationPlan, NamespacePlan, iptables_rules

__all__ = [
    "IsolationError",
    "apply_plan",
    "leftovers",
    "netns_connect",
    "require_root",
    "taken_subnets",
    "teardown",
    "write_hosts",
]

NETNS_ETC = Path("/etc/netns")
_CLONE_NEWNET = 0x40000000
_TIMEOUT = 15.0


class IsolationError(Exception):
    pass


def require_root() -> None:
    if os.geteuid() != 0:
        raise IsolationError(
            "isolation: netns needs root (run `meshward up` as root, or set isolation: none "
            "to run the workloads unisolated on loopback)"
        )
    for tool in ("ip", "iptables", "setpriv"):
        if shutil.which(tool) is None:
            raise IsolationError(f"isolation: netns needs `{tool}` (Debian: iproute2, iptables, util-linux)")


def _run(args: Sequence[str], check: bool = True) -> str:
    try:
        done = subprocess.run(list(args), capture_output=True, text=True, timeout=_TIMEOUT)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise IsolationError(f"`{' '.join(args)}` failed: {exc}") from None
    if check and done.returncode != 0:
        raise IsolationError(f"`{' '.join(args)}` failed: {(done.stderr or done.stdout).strip()}")
    return done.stdout


def taken_subnets() -> list[str]:
    """The IPv4 networks on this machine's interfaces (a plan avoids them)."""
    out = _run(["ip", "-o", "-4", "addr", "show"], check=False)
    nets = []
    for line in out.splitlines():
        parts = line.split()
        if "inet" in parts:
            nets.append(parts[parts.index("inet") + 1])
    return nets


def _in_ns(ns: NamespacePlan, *args: str) -> list[str]:
    return ["ip", "netns", "exec", ns.netns, *args]


def apply_plan(plan: IsolationPlan) -> None:
    """Create the bridge, then each namespace with its veth, address, loopback and rules."""
    teardown(plan.tag)  # leftovers of a mesh that died hard
    prefix = plan.subnet.split("/")[1]
    _run(["ip", "link", "add", plan.bridge, "type", "bridge"])
    _run(["ip", "addr", "add", f"{plan.gateway}/{prefix}", "dev", plan.bridge])
    _run(["ip", "link", "set", plan.bridge, "up"])
    for ns in plan.namespaces:
        _run(["ip", "netns", "add", ns.netns])
        _run(["ip", "link", "add", ns.host_veth, "type", "veth", "peer", "name", ns.ns_veth])
        _run(["ip", "link", "set", ns.ns_veth, "netns", ns.netns])
        _run(["ip", "link", "set", ns.host_veth, "master", plan.bridge, "up"])
        _run(["ip", "-n", ns.netns, "link", "set", ns.ns_veth, "name", "eth0"])
        _run(["ip", "-n", ns.netns, "addr", "add", f"{ns.address}/{prefix}", "dev", "eth0"])
        _run(["ip", "-n", ns.netns, "link", "set", "eth0", "up"])
        _run(["ip", "-n", ns.netns, "link", "set", "lo", "up"])
        for rule in iptables_rules(plan, ns):
            _run(_in_ns(ns, "iptables", "-w", "5", *rule))


def write_hosts(ns: NamespacePlan, text: str) -> None:
    """``ip netns exec`` bind-mounts ``/etc/netns/<ns>/hosts`` over ``/etc/hosts``."""
    d = NETNS_ETC / ns.netns
    d.mkdir(parents=True, exist_ok=True)
    tmp = d / "hosts.tmp"
    tmp.write_text(text)
    tmp.chmod(0o644)
    tmp.replace(d / "hosts")


def leftovers(tag: str) -> dict[str, list[str]]:
    """What exists of the mesh ``tag``: namespaces, links, /etc/netns entries."""
    names = [
        line.split()[0] for line in _run(["ip", "netns", "list"], check=False).splitlines() if line.strip()
    ]
    links = []
    for line in _run(["ip", "-o", "link", "show"], check=False).splitlines():
        parts = line.split(":")
        if len(parts) > 1:
            name = parts[1].strip().split("@")[0]
            if name.startswith((f"mwbr{tag}", f"mw{tag}")):
                links.append(name)
    etc = sorted(p.name for p in NETNS_ETC.glob(f"mw-{tag}-*")) if NETNS_ETC.exists() else []
    return {
        "namespaces": sorted(n for n in names if n.startswith(f"mw-{tag}-")),
        "links": sorted(links),
        "etc": etc,
    }


def teardown(tag: str) -> None:
    """Remove everything of the mesh ``tag``: processes still in its namespaces (killed), the
    namespaces, links and hosts files (idempotent; best effort, then verified)."""
    found = leftovers(tag)
    for name in found["namespaces"]:  # a process keeps a deleted namespace alive: end them first
        for pid in _run(["ip", "netns", "pids", name], check=False).split():
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid), signal.SIGKILL)
        _run(["ip", "netns", "delete", name], check=False)
    for link in found["links"]:
        _run(["ip", "link", "delete", link], check=False)
    for name in found["etc"]:
        shutil.rmtree(NETNS_ETC / name, ignore_errors=True)
    rest = leftovers(tag)
    if any(rest.values()):
        raise IsolationError(f"could not remove {rest}")


def netns_connect(netns: str, address: tuple[str, int], timeout: float) -> socket.socket:
    """A TCP connection made from inside ``netns`` (a probe of an app that listens on its
    namespace's loopback). The namespace is entered by a short-lived thread of its own: a
    socket keeps the namespace it was made in."""
    result: list[socket.socket | BaseException] = []

    def work() -> None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            with open(f"/run/netns/{netns}", "rb") as f:
                if libc.setns(f.fileno(), _CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), f"setns({netns}) failed")
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.settimeout(timeout)
            try:
                sock.connect(address)
            except BaseException:
                sock.close()
                raise
            result.append(sock)
        except BaseException as exc:
            result.append(exc)

    t = threading.Thread(target=work, daemon=True)
    t.start()
    t.join(timeout + 5)
    if not result:
        raise TimeoutError(f"connecting inside {netns} timed out")
    got = result[0]
    if isinstance(got, BaseException):
        raise got
    return got
