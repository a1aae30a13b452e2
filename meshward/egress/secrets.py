"""The control plane's secrets: stored 0600 under the state directory, released to few.

``<state>/secrets/`` (0700) holds one file per secret, ``<name>`` (0600, the value only,
written atomically). ``meshward secret set NAME`` writes it from standard input; ``list``
shows names and dates (the files' modification times), never values. Nothing else in the
state directory, no log, no config dump and no audit record holds a value.

Who receives a value (:func:`may_receive`): the sidecar of a workload that at least one
EgressPolicy allows to reach (host and port level) an ExternalService whose ``credential``
names the secret. The control plane asks this on every fetch, so a policy change revokes
access at the sidecar's next refresh.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from meshward.config.snapshot import WorkloadInfo
from meshward.egress.engine import compile_egress
from meshward.identity.keys import write_private
from meshward.identity.ledger import iso
from meshward.resources.base import Resource
from meshward.resources.egress import SECRET_NAME, ExternalService

__all__ = [
    "MAX_SECRET_BYTES",
    "SecretError",
    "SecretInfo",
    "SecretStore",
    "may_receive",
    "refusal_event",
    "release_secret",
]

MAX_SECRET_BYTES = 8192
_NAME = re.compile(SECRET_NAME)


class SecretError(ValueError):
    """A refused name or value, or a secret that does not exist."""


@dataclass(frozen=True, slots=True)
class SecretInfo:
    name: str
    updated: dt.datetime

    def to_json(self) -> dict[str, str]:
        return {"name": self.name, "updated": iso(self.updated)}


def check_value(value: str) -> str:
    """The value as it will be injected: one line, printable, bounded (trailing newline cut)."""
    value = value.rstrip("\r\n")
    if not value:
        raise SecretError("the secret is empty (give the value on standard input)")
    if len(value.encode()) > MAX_SECRET_BYTES:
        raise SecretError(f"the secret is longer than {MAX_SECRET_BYTES} bytes")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value) or not value.isascii():
        raise SecretError("the secret must be one line of printable ASCII (it becomes a header value)")
    return value


class SecretStore:
    """One file per secret under ``<state>/secrets``."""

    def __init__(self, state_dir: Path) -> None:
        self.path = Path(state_dir) / "secrets"

    def _file(self, name: str) -> Path:
        if not _NAME.match(name):
            raise SecretError(f"invalid secret name {name!r} (lower-case letters, digits, '-', '_', '.')")
        return self.path / name

    def set(self, name: str, value: str) -> SecretInfo:
        target = self._file(name)
        value = check_value(value)
        self.path.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.path.chmod(0o700)
        write_private(target, value.encode("ascii"))
        return self._info(target)

    def get(self, name: str) -> str:
        target = self._file(name)
        try:
            return target.read_text("ascii")
        except FileNotFoundError:
            raise SecretError(f"no secret {name!r} (set it with `meshward secret set {name}`)") from None

    def list(self) -> list[SecretInfo]:
        if not self.path.is_dir():
            return []
        return [
            self._info(p)
            for p in sorted(self.path.iterdir())
            if p.is_file() and _NAME.match(p.name) and not p.name.startswith(".")
        ]

    @staticmethod
    def _info(path: Path) -> SecretInfo:
        return SecretInfo(path.name, dt.datetime.fromtimestamp(os.stat(path).st_mtime, dt.UTC))


def may_receive(
    resources: Sequence[Resource[Any]],
    workload: WorkloadInfo,
    secret: str,
    root_namespace: str,
    trust_domain: str,
) -> str | None:
    """The ExternalService host (``host:port``) that entitles ``workload`` to ``secret``, or None."""
    services = [
        r
        for r in resources
        if isinstance(r, ExternalService) and r.spec.credential and r.spec.credential.secret == secret
    ]
    if not services:
        return None
    engine = compile_egress(resources, workload, root_namespace, trust_domain)
    for svc in services:
        for host in svc.spec.hosts:
            for port in svc.spec.ports:
                if engine.allows_host(host, port.number).allowed:
                    return f"{host}:{port.number}"
    return None


def release_secret(
    state_dir: Path,
    resources: Sequence[Resource[Any]],
    trust_domain: str,
    namespace: str,
    name: str,
    secret: str,
) -> dict[str, Any]:
    """The control plane's answer to a sidecar's fetch (raises PermissionError when not entitled,
    :class:`SecretError` when the name is bad or unset)."""
    from meshward.config.build import mesh_spec, workload_info

    workload = workload_info(resources, namespace, name)
    spec = mesh_spec(resources, trust_domain)
    via = may_receive(resources, workload, secret, spec.root_namespace, trust_domain)
    if via is None:
        raise PermissionError(
            f"workload {namespace}/{name} is not allowed to reach any ExternalService using secret {secret!r}"
        )
    store = SecretStore(state_dir)
    value = store.get(secret)
    return {"name": secret, "value": value, "via": via}


def refusal_event(peer: str, secret: str, reason: str) -> dict[str, Any]:
    """The control plane's audit record of a refused credential fetch (names only, no value)."""
    from meshward.audit.ocsf import api_activity

    return api_activity(
        "ReleaseSecret",
        activity="read",
        actor=peer,
        time_ms=int(dt.datetime.now(dt.UTC).timestamp() * 1000),
        success=False,
        resource={"type": "Secret", "uid": secret[:64]},
        message=f"credential refused: {reason[:300]}",
    )
