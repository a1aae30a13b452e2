"""Pure: what isolating a mesh's workloads means, as data (tested without root or a network).

A plan is derived from the state directory (its hash picks the names and the /24, so two meshes
on one machine do not collide) and the isolated workloads in file order. Nothing here runs a
command; :mod:`meshward.isolation.network` applies a plan.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

__all__ = [
    "APP_UID_BASE",
    "INBOUND_PORT",
    "OUTBOUND_PORT",
    "IsolationPlan",
    "NamespacePlan",
    "hosts_file",
    "iptables_rules",
    "make_plan",
]

INBOUND_PORT = 15006  # Istio's ports: inside a namespace the sidecar owns the whole port space
OUTBOUND_PORT = 15001
ADMIN_PORT = 15000
APP_UID_BASE = 20000  # app users: 20000 + 100 × (tag mod 1000) + index (numeric: nothing is
# added to /etc/passwd); each mesh on a machine gets its own block of 100
SIDECAR_UID = 0  # the sidecar runs as the mesh's operator (root): its traffic is not redirected
_MAX_WORKLOADS = 100


@dataclass(frozen=True, slots=True)
class NamespacePlan:
    """One isolated workload."""

    ref: str  # "ns/name"
    netns: str  # network namespace name
    host_veth: str  # the bridge side
    ns_veth: str  # the namespace side (renamed eth0 inside)
    address: str  # its IP on the bridge
    uid: int  # the app's user (and group)
    app_port: int


@dataclass(frozen=True, slots=True)
class IsolationPlan:
    tag: str  # 6 hex digits from the state directory: every name carries it
    bridge: str
    subnet: str  # "10.X.Y.0/24"
    gateway: str  # the bridge's address (the host side: the control plane listens there)
    namespaces: tuple[NamespacePlan, ...] = field(default_factory=tuple)
    exclude_outbound_ports: tuple[int, ...] = ()
    exclude_outbound_cidrs: tuple[str, ...] = ()

    def of(self, ref: str) -> NamespacePlan | None:
        return next((n for n in self.namespaces if n.ref == ref), None)


def _tag(state_dir: str) -> str:
    return hashlib.sha256(state_dir.encode()).hexdigest()[:6]


def make_plan(
    state_dir: str,
    workloads: Sequence[tuple[str, int]],
    exclude_outbound_ports: Iterable[int] = (),
    exclude_outbound_cidrs: Iterable[str] = (),
    taken_subnets: Iterable[str] = (),
) -> IsolationPlan:
    """``workloads``: (ref, app port) of each isolated workload, in order. ``taken_subnets``:
    /24s already on this machine's interfaces (the plan moves to the next free one)."""
    if len(workloads) > _MAX_WORKLOADS:
        raise ValueError(f"isolation supports at most {_MAX_WORKLOADS} workloads per mesh")
    tag = _tag(state_dir)
    seed = int(tag, 16)
    taken = {str(ipaddress.ip_network(s, strict=False)) for s in taken_subnets}
    for attempt in range(256 * 256):
        n = (seed + attempt) % (256 * 256)
        subnet = f"10.{n // 256}.{n % 256}.0/24"
        if subnet not in taken:
            break
    else:  # pragma: no cover - 65,536 taken /24s
        raise ValueError("no free /24 in 10.0.0.0/8 for the mesh's bridge")
    base = subnet.rsplit(".", 1)[0]
    namespaces = tuple(
        NamespacePlan(
            ref=ref,
            netns=f"mw-{tag}-{i}",
            host_veth=f"mw{tag}h{i}",
            ns_veth=f"mw{tag}n{i}",
            address=f"{base}.{10 + i}",
            uid=APP_UID_BASE + 100 * (seed % 1000) + i,
            app_port=port,
        )
        for i, (ref, port) in enumerate(workloads)
    )
    return IsolationPlan(
        tag=tag,
        bridge=f"mwbr{tag}",
        subnet=subnet,
        gateway=f"{base}.1",
        namespaces=namespaces,
        exclude_outbound_ports=tuple(sorted(set(exclude_outbound_ports))),
        exclude_outbound_cidrs=tuple(exclude_outbound_cidrs),
    )


def hosts_file(services: Iterable[tuple[str, str, str]]) -> str:
    """``/etc/hosts`` for a namespace: (service, namespace, address) → ``service.ns`` and, for
    its own namespace's services, the short name too (the caller passes only those twice)."""
    lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost"]
    seen: set[str] = set()
    for service, namespace, address in services:
        for name in (f"{service}.{namespace}", f"{service}.{namespace}.svc.cluster.local"):
            if name not in seen:
                seen.add(name)
                lines.append(f"{address}\t{name}")
    return "\n".join(lines) + "\n"


def iptables_rules(plan: IsolationPlan, ns: NamespacePlan) -> list[list[str]]:
    """The ``iptables -t nat`` commands (arguments after ``iptables``) for one namespace.

    istio-iptables semantics, in chains of our own so teardown is one flush:
    OUTPUT: the sidecar's own traffic (its uid) and loopback pass; excluded ports and CIDRs pass;
    every other TCP connection is redirected to the sidecar's outbound listener.
    PREROUTING: TCP to the app's port is redirected to the sidecar's inbound listener (mTLS).
    """
    out = [
        ["-t", "nat", "-N", "MESHWARD_OUTPUT"],
        ["-t", "nat", "-N", "MESHWARD_INBOUND"],
        ["-t", "nat", "-A", "OUTPUT", "-p", "tcp", "-j", "MESHWARD_OUTPUT"],
        ["-t", "nat", "-A", "PREROUTING", "-p", "tcp", "-j", "MESHWARD_INBOUND"],
        [
            "-t",
            "nat",
            "-A",
            "MESHWARD_OUTPUT",
            "-m",
            "owner",
            "--uid-owner",
            str(SIDECAR_UID),
            "-j",
            "RETURN",
        ],
        ["-t", "nat", "-A", "MESHWARD_OUTPUT", "-d", "127.0.0.0/8", "-j", "RETURN"],
    ]
    for port in plan.exclude_outbound_ports:
        out.append(["-t", "nat", "-A", "MESHWARD_OUTPUT", "-p", "tcp", "--dport", str(port), "-j", "RETURN"])
    for cidr in plan.exclude_outbound_cidrs:
        out.append(["-t", "nat", "-A", "MESHWARD_OUTPUT", "-d", cidr, "-j", "RETURN"])
    out.append(
        [
            "-t",
            "nat",
            "-A",
            "MESHWARD_OUTPUT",
            "-p",
            "tcp",
            "-j",
            "REDIRECT",
            "--to-ports",
            str(OUTBOUND_PORT),
        ]
    )
    if ns.app_port:
        out.append(
            [
                "-t", "nat", "-A", "MESHWARD_INBOUND", "-p", "tcp", "--dport", str(ns.app_port),
                "-j", "REDIRECT", "--to-ports", str(INBOUND_PORT),
            ]
        )  # fmt: skip
    return out
