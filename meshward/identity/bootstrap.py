"""Creating a mesh's authority: ``meshward init``, with a fresh CA or an operator's own.

Three ways to get an issuing CA (all keys are written 0600):

1. Nothing given: a new root (ECDSA P-256, 10 years) and an issuing intermediate (1 year) under it.
2. ``--ca-cert ROOT.pem --ca-key ROOT.key`` where the certificate is self-signed: the operator's
   root. Meshward keeps its key (``ca/root.key``) and makes its own intermediate under it, so
   ``meshward ca rotate`` works as with a generated root.
3. ``--ca-cert CHAIN.pem --ca-key INTERMEDIATE.key`` where the first certificate is NOT
   self-signed: an intermediate the operator issued from a root that stays offline. CHAIN.pem
   holds the intermediate first, then every CA above it up to and including the self-signed root
   (the root is needed for ``bundle.pem``; it is not sent in workload chains). No ``root.key``
   is stored, so ``ca rotate`` needs a new operator intermediate the same way
   (``meshward ca rotate --ca-cert NEW_CHAIN.pem --ca-key NEW.key``); a chain ending in a
   different root is a root rotation (the old root stays trusted for the overlap).

The trust domain is ``--trust-domain``, else the ``spiffe://TD`` URI SAN of the operator's CA if it
has one, else ``demo.local``. A CA whose SPIFFE SAN names another trust domain is refused.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import itertools
import shutil
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from meshward.identity.authority import make_intermediate, make_root, pem, trust_domain_of
from meshward.identity.keys import key_pem, write_private, write_public
from meshward.identity.ledger import SvidLedger
from meshward.identity.spiffe import InvalidSpiffeId, parse_identity
from meshward.identity.state import MeshState
from meshward.identity.tokens import JoinTokens

__all__ = [
    "DEFAULT_TRUST_DOMAIN",
    "CaMaterial",
    "CaSetupRefused",
    "init_mesh",
    "load_operator_ca",
    "write_ca_material",
]

DEFAULT_TRUST_DOMAIN = "demo.local"


class CaSetupRefused(Exception):
    """The operator's request or CA files cannot be used; the message says what to change."""


@dataclass(frozen=True)
class CaMaterial:
    """What goes into ``<state>/ca``: the root, the issuing CA and any CAs between them."""

    root: x509.Certificate
    root_key: ec.EllipticCurvePrivateKey | None
    intermediate: x509.Certificate
    intermediate_key: ec.EllipticCurvePrivateKey
    upstream: tuple[x509.Certificate, ...] = ()


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        return False
    try:
        ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
        can_sign = ku.key_cert_sign
    except x509.ExtensionNotFound:
        can_sign = True  # no KeyUsage means no restriction (RFC 5280)
    return bc.ca and can_sign


def _issued_by(child: x509.Certificate, parent: x509.Certificate) -> bool:
    try:
        child.verify_directly_issued_by(parent)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _check_valid_now(cert: x509.Certificate, path: Path) -> None:
    now = dt.datetime.now(dt.UTC)
    if not cert.not_valid_before_utc <= now < cert.not_valid_after_utc:
        raise CaSetupRefused(
            f"{path}: {cert.subject.rfc4514_string()} is not valid now (expired or not yet valid)"
        )


def load_operator_ca(cert_path: Path, key_path: Path, trust_domain: str | None) -> tuple[CaMaterial, str]:
    """Read an operator's root or intermediate chain (see the module docstring) and its key."""
    try:
        certs = x509.load_pem_x509_certificates(cert_path.read_bytes())
    except ValueError as exc:
        raise CaSetupRefused(f"{cert_path}: not a PEM certificate file") from exc
    try:
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except (ValueError, TypeError) as exc:
        raise CaSetupRefused(f"{key_path}: not an unencrypted PEM private key ({exc})") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise CaSetupRefused(f"{key_path}: only ECDSA CA keys are supported")
    first = certs[0]
    if key.public_key() != first.public_key():
        raise CaSetupRefused(f"{key_path} is not the key of the first certificate in {cert_path}")
    for cert in certs:
        if not _is_ca(cert):
            raise CaSetupRefused(
                f"{cert_path}: {cert.subject.rfc4514_string()} is not a CA (CA:TRUE, keyCertSign)"
            )
        _check_valid_now(cert, cert_path)
    for child, parent in itertools.pairwise(certs):
        if not _issued_by(child, parent):
            raise CaSetupRefused(
                f"{cert_path}: {child.subject.rfc4514_string()} is not issued by the next certificate;"
                " list the intermediate first, then each issuer up to the root"
            )
    top = certs[-1]
    if not _issued_by(top, top):
        raise CaSetupRefused(
            f"{cert_path}: the chain does not end in a self-signed root; append the issuing CAs"
            " up to and including the root (it is needed for the trust bundle)"
        )
    ca_td = trust_domain_of(first)
    if trust_domain is None:
        trust_domain = ca_td or DEFAULT_TRUST_DOMAIN
    elif ca_td is not None and ca_td != trust_domain:
        raise CaSetupRefused(f"{cert_path} is a CA for trust domain {ca_td!r}, not {trust_domain!r}")
    _check_trust_domain(trust_domain)
    if len(certs) == 1:  # the operator's root: we keep its key and issue from our own intermediate
        bc = first.extensions.get_extension_for_class(x509.BasicConstraints).value
        if bc.path_length == 0:
            raise CaSetupRefused(
                f"{cert_path}: this root has pathLen=0 and cannot have an intermediate; plug in an"
                " intermediate issued from it instead"
            )
        inter, inter_key = make_intermediate(trust_domain, first, key)
        return CaMaterial(first, key, inter, inter_key), trust_domain
    return CaMaterial(top, None, first, key, tuple(certs[1:-1])), trust_domain


def _check_trust_domain(trust_domain: str) -> None:
    try:
        parse_identity(f"{trust_domain}/ns/x/sa/x", trust_domain)
    except InvalidSpiffeId as exc:
        raise CaSetupRefused(
            f"invalid trust domain {trust_domain!r} (lower-case letters, digits, . _ -)"
        ) from exc


def write_ca_material(state: MeshState, ca: CaMaterial) -> None:
    """Write the root, the issuing pair and its upstream chain; the caller holds the CA lock."""
    write_public(state.root_cert_path, pem(ca.root))
    if ca.root_key is not None:
        write_private(state.root_key_path, key_pem(ca.root_key))
    else:
        state.root_key_path.unlink(missing_ok=True)
    write_private(state.intermediate_key_path, key_pem(ca.intermediate_key))
    chain = pem(ca.intermediate) + b"".join(pem(c) for c in ca.upstream)
    write_public(state.intermediate_cert_path, chain)


def init_mesh(
    state: MeshState,
    trust_domain: str | None = None,
    ca_cert: Path | None = None,
    ca_key: Path | None = None,
    force: bool = False,
) -> str:
    """Create the mesh's authority in ``state``; returns the trust domain."""
    if (ca_cert is None) != (ca_key is None):
        raise CaSetupRefused("--ca-cert and --ca-key go together")
    if (state.exists() or state.root_cert_path.exists()) and not force:
        what = f" (trust domain {state.trust_domain})" if state.exists() else ""
        raise CaSetupRefused(
            f"a mesh already exists in {state.path}{what}; pass --force to replace it"
            " (certificates it issued will no longer be trusted)"
        )
    if ca_cert is not None and ca_key is not None:
        ca, trust_domain = load_operator_ca(ca_cert, ca_key, trust_domain)
    else:
        trust_domain = trust_domain or DEFAULT_TRUST_DOMAIN
        _check_trust_domain(trust_domain)
        root, root_key = make_root(trust_domain)
        inter, inter_key = make_intermediate(trust_domain, root, root_key)
        ca = CaMaterial(root, root_key, inter, inter_key)

    if not state.path.exists():
        state.path.mkdir(mode=0o700, parents=True)
        state.path.chmod(0o700)  # whatever the umask
    state.mesh_file.unlink(missing_ok=True)  # from here until the end the mesh does not "exist"
    with state.ca_lock(exclusive=True):
        state.rotation_path.unlink(missing_ok=True)
        write_ca_material(state, ca)
        write_public(state.bundle_path, pem(ca.root))
    shutil.rmtree(state.operator_dir, ignore_errors=True)
    with contextlib.closing(state.connect()) as conn:
        SvidLedger(conn).clear()
        JoinTokens(conn).clear()
    state.write_mesh_file(trust_domain)
    return trust_domain
