"""Identity: each workload's current certificate and expiry, the trust bundle, the CA and its
rotation state (retired roots still trusted, and until when)."""

from __future__ import annotations

import datetime as dt
import hashlib
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from meshward.dashboard.render import Html, esc, table
from meshward.dashboard.view import MeshView

__all__ = ["render"]


def _left(not_after: dt.datetime) -> str:
    seconds = (not_after - dt.datetime.now(dt.UTC)).total_seconds()
    if seconds <= 0:
        return "EXPIRED"
    if seconds < 3600:
        return f"{int(seconds // 60)} min"
    if seconds < 86400 * 2:
        return f"{seconds / 3600:.1f} h"
    return f"{int(seconds // 86400)} days"


def _cert_row(what: str, cert: x509.Certificate) -> tuple[str, ...]:
    der = cert.public_bytes(serialization.Encoding.DER)
    end = cert.not_valid_after_utc
    return (
        what,
        cert.subject.rfc4514_string(),
        end.strftime("%Y-%m-%d %H:%M:%SZ"),
        _left(end),
        hashlib.sha256(der).hexdigest()[:23],
    )


def _expiry(role: str, root: x509.Certificate, chain: list[x509.Certificate]) -> dt.datetime:
    return (root if role == "root" else chain[0]).not_valid_after_utc


def _leaf(sidecar_dir: str) -> x509.Certificate | None:
    if not sidecar_dir:
        return None
    try:
        data = (Path(sidecar_dir) / "svid.pem").read_bytes()
        return x509.load_pem_x509_certificates(data[data.find(b"-----BEGIN CERTIFICATE-----") :])[0]
    except (OSError, ValueError):
        return None


def render(view: MeshView, query: dict[str, str]) -> Html:
    from meshward.identity.issuance import IdentityService
    from meshward.identity.ledger import iso
    from meshward.identity.rotation import next_overlap_end
    from meshward.identity.state import load_pem_chain
    from meshward.mesh.records import read_run

    run = read_run(view.state.path)
    rows = []
    for w in run.workloads if run else []:
        leaf = _leaf(w.sidecar_dir)
        if leaf is None:
            rows.append((w.ref, w.identity, "-", "-", "no certificate yet"))
            continue
        end = leaf.not_valid_after_utc
        rows.append(
            (w.ref, w.identity, f"{leaf.serial_number:x}", end.strftime("%Y-%m-%d %H:%M:%SZ"), _left(end))
        )
    state = view.state
    bundle = x509.load_pem_x509_certificates(state.bundle_pem())
    with IdentityService(state) as identity:  # the ledger only: no CA key is loaded here
        issued = identity.certificates()[:20]
    root = load_pem_chain(state.root_cert_path.read_bytes(), str(state.root_cert_path))[0]
    chain = load_pem_chain(state.intermediate_cert_path.read_bytes(), str(state.intermediate_cert_path))
    ca_rows = [_cert_row("root", root), _cert_row("intermediate", chain[0])]
    ca_rows += [_cert_row("upstream", c) for c in chain[1:] if c.subject != root.subject]
    soon = dt.datetime.now(dt.UTC) + dt.timedelta(days=30)
    warnings = [
        f"{role} CA {subject} expires at {end} ({left}): rotate it (`meshward ca rotate`)"
        for role, subject, end, left, _ in ca_rows
        if _expiry(role, root, chain) <= soon
    ]
    overlap = next_overlap_end(view.state)
    rotation = (
        f"Root rotation in progress: {len(bundle) - 1} retired root(s) trusted until {iso(overlap)}."
        if overlap is not None
        else "No rotation in progress: the bundle holds the current root only."
    )
    warn = "".join(f'<p class="banner bad">{esc(w)}</p>' for w in warnings)
    return Html(
        warn
        + "<h2>Workload certificates</h2>"
        + table(["workload", "identity", "serial", "not after", "left"], rows, "certs")
        + "<h2>Certificate authority</h2>"
        + f'<p class="banner" id="rotation">{esc(rotation)}</p>'
        + table(["role", "subject", "not after", "left", "sha256"], ca_rows)
        + "<h2>Trust bundle</h2>"
        + table(
            ["role", "subject", "not after", "left", "sha256"], [_cert_row("trusted root", c) for c in bundle]
        )
        + "<h2>Recently issued</h2>"
        + table(
            ["identity", "serial", "issued", "not after", "via", "revoked"],
            [
                (r.identity, r.serial, r.issued_at, r.not_after, r.via, "yes" if r.revoked else "")
                for r in issued
            ],
        )
    )
