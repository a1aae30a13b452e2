"""The certificate authority: a root, an issuing intermediate, and X.509-SVID signing.

Workload certificates follow the SPIFFE X509-SVID specification: exactly one URI SAN,
``CA:FALSE``, digitalSignature key usage, serverAuth + clientAuth, and the chain
leaf + intermediate. The authority only checks the CSR itself here; who may ask for which
identity (join tokens) is decided by the caller before :meth:`Authority.sign_csr`.
"""

from __future__ import annotations

import datetime as dt
import secrets
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from meshward.identity.keys import generate_key
from meshward.identity.spiffe import InvalidSpiffeId, SpiffeId, is_reserved

__all__ = [
    "DEFAULT_SVID_TTL",
    "MAX_SVID_TTL",
    "Authority",
    "CsrRefused",
    "make_intermediate",
    "make_root",
    "pem",
    "spiffe_id_of",
    "trust_domain_of",
]

DEFAULT_SVID_TTL = dt.timedelta(hours=1)
MAX_SVID_TTL = dt.timedelta(hours=24)
ROOT_TTL = dt.timedelta(days=3650)
INTERMEDIATE_TTL = dt.timedelta(days=365)
_BACKDATE = dt.timedelta(minutes=1)  # tolerate small clock skew between processes


class CsrRefused(Exception):
    """The authority will not sign this CSR; ``reason`` says why (it is the requester's fault)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _ca_cert(
    subject_cn: str,
    trust_domain: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Certificate | None,
    issuer_key: ec.EllipticCurvePrivateKey,
    ttl: dt.timedelta,
    path_length: int | None,
) -> x509.Certificate:
    now = _now()
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "meshward"),
            x509.NameAttribute(NameOID.COMMON_NAME, subject_cn),
        ]
    )
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.subject if issuer else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + ttl)
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(f"spiffe://{trust_domain}")]),
            critical=False,
        )
    )
    if issuer is not None:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False
        )
    return builder.sign(issuer_key, hashes.SHA256())


def _ca_stamp() -> str:
    """Time plus a random tag: two CAs made in the same second still get distinct subjects."""
    return f"{_now().strftime('%Y%m%d%H%M%S')} {secrets.token_hex(3)}"


def make_root(
    trust_domain: str, ttl: dt.timedelta = ROOT_TTL
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = generate_key()
    stamp = _ca_stamp()
    return _ca_cert(f"meshward root {trust_domain} {stamp}", trust_domain, key, None, key, ttl, 1), key


def make_intermediate(
    trust_domain: str,
    root: x509.Certificate,
    root_key: ec.EllipticCurvePrivateKey,
    ttl: dt.timedelta = INTERMEDIATE_TTL,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = generate_key()
    stamp = _ca_stamp()
    # Never outlive the root that vouches for it.
    ttl = min(ttl, root.not_valid_after_utc - _now())
    cert = _ca_cert(f"meshward issuing {trust_domain} {stamp}", trust_domain, key, root, root_key, ttl, 0)
    return cert, key


def spiffe_id_of(cert: x509.Certificate | x509.CertificateSigningRequest) -> SpiffeId:
    """The one SPIFFE ID in a certificate's or CSR's URI SAN (refuses zero or several)."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound as exc:
        raise InvalidSpiffeId("no subjectAltName") from exc
    uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    others = len(list(san)) - len(uris)
    if len(uris) != 1 or others:
        raise InvalidSpiffeId(f"expected exactly one URI SAN, found {len(uris)} URI and {others} other SANs")
    return SpiffeId.from_uri(uris[0])


def trust_domain_of(cert: x509.Certificate) -> str | None:
    """The trust domain of a certificate's first ``spiffe://`` URI SAN (a root's is ``spiffe://TD``)."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None
    for uri in san.get_values_for_type(x509.UniformResourceIdentifier):
        if uri.startswith("spiffe://"):
            return uri[len("spiffe://") :].split("/", 1)[0]
    return None


@dataclass(frozen=True)
class Authority:
    """An issuing intermediate (with its key) under a root, for one trust domain."""

    trust_domain: str
    root: x509.Certificate
    intermediate: x509.Certificate
    intermediate_key: ec.EllipticCurvePrivateKey
    #: CA certificates between the intermediate and the root (an operator's deeper chain), if any.
    upstream: tuple[x509.Certificate, ...] = ()

    def check_csr(self, csr_pem: bytes) -> tuple[x509.CertificateSigningRequest, SpiffeId]:
        """Validate a CSR on its own terms; raise :class:`CsrRefused` with the reason."""
        try:
            csr = x509.load_pem_x509_csr(csr_pem)
        except ValueError as exc:
            raise CsrRefused("CSR is not valid PEM") from exc
        try:
            # A public key that is not a point of its curve makes these raise ValueError (found
            # by fuzz/fuzz_csr.py): a refusal like any other, never an error of ours.
            if not csr.is_signature_valid:
                raise CsrRefused("CSR signature is invalid")
            pub = csr.public_key()
        except (InvalidSignature, ValueError, UnsupportedAlgorithm) as exc:
            raise CsrRefused("CSR public key or signature is invalid") from exc
        if not isinstance(pub, ec.EllipticCurvePublicKey) or pub.curve.name != "secp256r1":
            raise CsrRefused("CSR key must be ECDSA P-256")
        try:
            extensions = csr.extensions
        except ValueError as exc:  # a duplicate or malformed extension
            raise CsrRefused("CSR extensions are malformed") from exc
        for ext in extensions:
            if isinstance(ext.value, x509.BasicConstraints) and ext.value.ca:
                raise CsrRefused("CSR asks for CA:TRUE")
            if isinstance(ext.value, x509.KeyUsage) and ext.value.key_cert_sign:
                raise CsrRefused("CSR asks for keyCertSign")
        try:
            sid = spiffe_id_of(csr)
        except InvalidSpiffeId as exc:
            raise CsrRefused(f"CSR identity: {str(exc)[:300]}") from exc
        if sid.trust_domain != self.trust_domain:
            raise CsrRefused(f"CSR trust domain {sid.trust_domain!r} is not {self.trust_domain!r}")
        if is_reserved(sid):
            raise CsrRefused(f"CSR asks for {sid.uri}, an identity reserved for the mesh itself")
        return csr, sid

    def sign_csr(
        self, csr_pem: bytes, expected: SpiffeId, ttl: dt.timedelta = DEFAULT_SVID_TTL
    ) -> x509.Certificate:
        """Sign an X.509-SVID for ``expected``; the CSR must ask for exactly that identity."""
        csr, sid = self.check_csr(csr_pem)
        if sid != expected:
            raise CsrRefused(f"CSR identity {sid.uri} does not match the authorized identity {expected.uri}")
        pub = csr.public_key()
        assert isinstance(pub, ec.EllipticCurvePublicKey)
        return self.issue(sid, pub, ttl)

    def issue(
        self, sid: SpiffeId, public_key: ec.EllipticCurvePublicKey, ttl: dt.timedelta = DEFAULT_SVID_TTL
    ) -> x509.Certificate:
        if ttl <= dt.timedelta(0):
            raise CsrRefused("certificate lifetime must be positive")
        ttl = min(ttl, MAX_SVID_TTL)
        now = _now()
        not_after = min(now + ttl, self.intermediate.not_valid_after_utc)
        return (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "meshward")]))
            .issuer_name(self.intermediate.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _BACKDATE)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                critical=False,
            )
            .add_extension(
                x509.SubjectAlternativeName([x509.UniformResourceIdentifier(sid.uri)]), critical=True
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.intermediate_key.public_key()),
                critical=False,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
            .sign(self.intermediate_key, hashes.SHA256())
        )

    def chain_pem(self, leaf: x509.Certificate) -> bytes:
        """The SVID chain a workload presents: leaf, intermediate, then any upstream CAs (never the root)."""
        return pem(leaf) + self.chain_pem_tail()

    def chain_pem_tail(self) -> bytes:
        """What follows the leaf in every chain: the intermediate, then any upstream CAs."""
        return pem(self.intermediate) + b"".join(pem(c) for c in self.upstream)
