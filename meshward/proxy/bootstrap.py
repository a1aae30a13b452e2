"""The static bootstrap file: everything a sidecar needs without a control plane (tests, demos).

JSON or YAML::

    identity: {cert: svid.pem, key: svid.key, bundle: bundle.pem}   # cert = leaf + intermediate
    app: 127.0.0.1:8080                  # inbound forwards here (omit: no local app)
    listeners: {inbound: 127.0.0.1:0, outbound: 127.0.0.1:0, admin: 127.0.0.1:0}   # 0 = free
    mtls: STRICT                         # optional, overrides snapshot.mesh.mtls.mode
    options: {max_request_body: 1048576, request_timeout: 30}   # any SidecarOptions field
    snapshot: {...}                      # MeshSnapshot.to_json()

Relative paths are relative to the bootstrap file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from meshward.config.snapshot import MeshSnapshot
from meshward.proxy.options import SidecarOptions, parse_address

__all__ = ["Bootstrap", "BootstrapError", "load_bootstrap"]


class BootstrapError(ValueError):
    """The bootstrap file is unreadable or invalid (the operator's fault)."""


@dataclass
class Bootstrap:
    options: SidecarOptions
    chain_pem: bytes
    key_pem: bytes
    bundle_pem: bytes
    snapshot: MeshSnapshot


def _read(base: Path, value: Any, what: str) -> bytes:
    if not isinstance(value, str):
        raise BootstrapError(f"identity.{what} must be a file path")
    path = Path(value) if Path(value).is_absolute() else base / value
    try:
        return path.read_bytes()
    except OSError as exc:
        raise BootstrapError(f"cannot read identity.{what} {path}: {exc.strerror}") from exc


def load_bootstrap(path: Path) -> Bootstrap:
    try:
        text = path.read_text()
    except OSError as exc:
        raise BootstrapError(f"cannot read bootstrap file {path}: {exc.strerror}") from exc
    if path.suffix == ".json":
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise BootstrapError(f"{path}: not valid JSON: {exc}") from exc
    else:
        import yaml  # only for a YAML bootstrap: a JSON one keeps the sidecar lean

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise BootstrapError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise BootstrapError(f"{path}: expected a mapping at the top level")
    unknown = sorted(set(data) - {"identity", "app", "listeners", "mtls", "options", "snapshot"})
    if unknown:
        raise BootstrapError(f"{path}: unknown keys: {', '.join(unknown)}")
    base = path.parent
    ident = data.get("identity")
    if not isinstance(ident, dict):
        raise BootstrapError(f"{path}: 'identity' with cert, key and bundle paths is required")
    try:
        options = SidecarOptions.from_mapping(dict(data.get("options") or {}))
        if data.get("app"):
            options.app = parse_address(str(data["app"]))
        for name, addr in (data.get("listeners") or {}).items():
            if name not in ("inbound", "outbound", "admin"):
                raise ValueError(f"unknown listener {name!r} (inbound, outbound, admin)")
            setattr(options, name, parse_address(str(addr)))
        if data.get("mtls") is not None:
            mode = str(data["mtls"]).upper()
            if mode not in ("STRICT", "PERMISSIVE"):
                raise ValueError(f"invalid mtls mode {data['mtls']!r} (STRICT or PERMISSIVE)")
            options.mtls_mode = mode  # type: ignore[assignment]
        if not isinstance(data.get("snapshot"), dict):
            raise ValueError("'snapshot' (MeshSnapshot JSON) is required")
        snapshot = MeshSnapshot.from_json(data["snapshot"])
    except (ValueError, KeyError, TypeError) as exc:
        raise BootstrapError(f"{path}: {exc}") from exc
    return Bootstrap(
        options,
        _read(base, ident.get("cert"), "cert"),
        _read(base, ident.get("key"), "key"),
        _read(base, ident.get("bundle"), "bundle"),
        snapshot,
    )
