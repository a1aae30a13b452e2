"""Rotating the authority and publishing the trust bundle (``meshward ca rotate``).

- ``rotate(state)``: a new issuing intermediate under the same root. Certificates already issued
  keep verifying (the root did not change); new ones chain to the new intermediate.
- ``rotate(state, new_root=True, overlap=24h)``: a new root and an intermediate under it. The old
  root is *retired*: it stays in ``bundle.pem`` until ``now + overlap`` so that workloads holding
  old-root SVIDs and workloads holding new-root SVIDs keep verifying each other while everyone
  renews (SVIDs live at most 24 h, so the default overlap covers every outstanding certificate).
- ``rotate(state, ca_cert=..., ca_key=...)``: plug in a new operator CA (see ``bootstrap``); a
  different root than the current one is retired with the overlap as above.

``ca/rotation.json`` lists the retired roots (PEM, retired_at, trusted_until). Every rotation and
every :func:`refresh_bundle` drops the retired roots whose overlap has ended and rewrites
``bundle.pem`` = current root + retired roots still in their overlap.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509

from meshward.identity.authority import make_intermediate, make_root, pem
from meshward.identity.bootstrap import CaMaterial, CaSetupRefused, load_operator_ca, write_ca_material
from meshward.identity.keys import write_public
from meshward.identity.ledger import iso
from meshward.identity.state import MeshState, MeshStateError, load_pem_chain

__all__ = ["DEFAULT_OVERLAP", "RotationResult", "next_overlap_end", "refresh_bundle", "rotate"]

DEFAULT_OVERLAP = dt.timedelta(hours=24)


@dataclass(frozen=True)
class RotationResult:
    intermediate_subject: str
    intermediate_not_after: dt.datetime
    root_rotated: bool
    old_root_trusted_until: dt.datetime | None
    bundle_roots: int


def _fingerprint(cert: x509.Certificate) -> str:
    return hashlib.sha256(pem(cert)).hexdigest()


def _read_retired(state: MeshState) -> list[dict[str, Any]]:
    if not state.rotation_path.exists():
        return []
    try:
        doc = json.loads(state.rotation_path.read_text())
        retired = doc["retired_roots"]
        assert isinstance(retired, list)
        return retired
    except (ValueError, KeyError, AssertionError) as exc:
        raise MeshStateError(f"{state.rotation_path} is damaged: {exc}") from exc


def _parse_time(text: str) -> dt.datetime:
    return dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)


def _publish(
    state: MeshState, root: x509.Certificate, retired: list[dict[str, Any]], now: dt.datetime
) -> int:
    """Drop ended overlaps, write rotation.json and bundle.pem; returns the number of roots."""
    live = [r for r in retired if _parse_time(r["trusted_until"]) > now]
    bundle = [root]
    seen = {_fingerprint(root)}
    for entry in live:
        cert = load_pem_chain(entry["pem"].encode(), str(state.rotation_path))[0]
        if _fingerprint(cert) not in seen:
            seen.add(_fingerprint(cert))
            bundle.append(cert)
    data = b"".join(pem(c) for c in bundle)
    write_public(state.rotation_path, (json.dumps({"retired_roots": live}, indent=2) + "\n").encode())
    if not state.bundle_path.exists() or state.bundle_path.read_bytes() != data:
        write_public(state.bundle_path, data)
    return len(bundle)


def refresh_bundle(state: MeshState, now: dt.datetime | None = None) -> int:
    """Drop retired roots whose overlap ended; returns how many roots the bundle holds."""
    now = now or dt.datetime.now(dt.UTC)
    state.trust_domain  # noqa: B018 - refuse a missing mesh with a clear message
    with state.ca_lock(exclusive=True):
        root = load_pem_chain(state.root_cert_path.read_bytes(), str(state.root_cert_path))[0]
        return _publish(state, root, _read_retired(state), now)


def next_overlap_end(state: MeshState) -> dt.datetime | None:
    """When the earliest retired root leaves the bundle (None: no overlap in progress)."""
    ends = [_parse_time(r["trusted_until"]) for r in _read_retired(state)]
    return min(ends) if ends else None


def rotate(
    state: MeshState,
    new_root: bool = False,
    overlap: dt.timedelta = DEFAULT_OVERLAP,
    ca_cert: Path | None = None,
    ca_key: Path | None = None,
) -> RotationResult:
    """Replace the issuing CA (and with ``new_root`` the root); see the module docstring."""
    if overlap < dt.timedelta(0):
        raise CaSetupRefused("the overlap cannot be negative")
    if (ca_cert is None) != (ca_key is None):
        raise CaSetupRefused("--ca-cert and --ca-key go together")
    td = state.trust_domain
    now = dt.datetime.now(dt.UTC)
    with state.ca_lock(exclusive=True):
        old_root = load_pem_chain(state.root_cert_path.read_bytes(), str(state.root_cert_path))[0]
        if ca_cert is not None and ca_key is not None:
            if new_root:
                raise CaSetupRefused("--root makes a new meshward root; it does not go with --ca-cert")
            ca, _ = load_operator_ca(ca_cert, ca_key, td)
        elif new_root:
            root, root_key = make_root(td)
            inter, inter_key = make_intermediate(td, root, root_key)
            ca = CaMaterial(root, root_key, inter, inter_key)
        else:
            held_key = state.root_key()
            if held_key is None:
                raise CaSetupRefused(
                    "this mesh does not hold its root key (an operator-supplied intermediate); rotate with"
                    " `meshward ca rotate --ca-cert NEW_CHAIN.pem --ca-key NEW.key`, or `--root` for a new"
                    " meshward-managed root"
                )
            inter, inter_key = make_intermediate(td, old_root, held_key)
            ca = CaMaterial(old_root, held_key, inter, inter_key)
        retired = _read_retired(state)
        root_rotated = _fingerprint(ca.root) != _fingerprint(old_root)
        until: dt.datetime | None = None
        if root_rotated:
            until = now + overlap
            retired.append(
                {
                    "sha256": _fingerprint(old_root),
                    "subject": old_root.subject.rfc4514_string(),
                    "pem": pem(old_root).decode(),
                    "retired_at": iso(now),
                    "trusted_until": iso(until),
                }
            )
        # Trust first, then issue: the bundle already holds the new root (and the retired one)
        # before anything is signed under it; a crash in between leaves a bundle that trusts both.
        roots = _publish(state, ca.root, retired, now)
        write_ca_material(state, ca)
    return RotationResult(
        intermediate_subject=ca.intermediate.subject.rfc4514_string(),
        intermediate_not_after=ca.intermediate.not_valid_after_utc,
        root_rotated=root_rotated,
        old_root_trusted_until=until,
        bundle_roots=roots,
    )
