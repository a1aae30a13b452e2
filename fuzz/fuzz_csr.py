"""Fuzz target: CSR parsing and validation in the identity authority; the properties checked:
any input is either refused with CsrRefused (never another exception) or accepted as a P-256
CSR with a valid signature, exactly one URI SAN, our trust domain, no reserved identity and no
CA:TRUE or keyCertSign request; an accepted CSR signs into an SVID that is a leaf.

Two kinds of input: raw bytes (PEM framing and DER as the attacker writes them), and CSRs built
from fuzzed parts (SAN values and types, extensions, key curve) and properly signed, so that the
checks after the signature are reached too."""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports(include=["meshward"]):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    from meshward.identity.authority import Authority, CsrRefused, make_intermediate, make_root
    from meshward.identity.spiffe import is_reserved
    from meshward.tls.peer import leaf_problem

_ROOT, _ROOT_KEY = make_root("demo.local")
_INTER, _INTER_KEY = make_intermediate("demo.local", _ROOT, _ROOT_KEY)
AUTHORITY = Authority("demo.local", _ROOT, _INTER, _INTER_KEY)
_KEYS = [ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP384R1())]
_PREFIXES = [
    "spiffe://demo.local/ns/",
    "spiffe://demo.local/ns/meshward-system/sa/",
    "spiffe://other/ns/",
    "",
    "http://",
]


def _built(fdp: atheris.FuzzedDataProvider) -> bytes:
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([]))
    names: list[x509.GeneralName] = []
    for _ in range(fdp.ConsumeIntInRange(0, 3)):
        value = fdp.PickValueInList(_PREFIXES) + fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(0, 80))
        if fdp.ConsumeBool():
            names.append(x509.UniformResourceIdentifier(value))
        else:
            names.append(x509.DNSName(value.encode("ascii", "ignore").decode() or "x"))
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=fdp.ConsumeBool())
    if fdp.ConsumeBool():
        builder = builder.add_extension(
            x509.BasicConstraints(ca=fdp.ConsumeBool(), path_length=None), critical=True
        )
    if fdp.ConsumeBool():
        flags = [fdp.ConsumeBool() for _ in range(7)]
        usage = x509.KeyUsage(*flags, encipher_only=False, decipher_only=False)
        builder = builder.add_extension(usage, critical=True)
    key = _KEYS[fdp.ConsumeIntInRange(0, len(_KEYS) - 1)]
    pem = builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)
    if fdp.ConsumeBool():  # damage it somewhere
        at = fdp.ConsumeIntInRange(0, len(pem) - 1)
        pem = pem[:at] + fdp.ConsumeBytes(4) + pem[at + 4 :]
    return pem


def TestOneInput(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    if fdp.ConsumeBool():
        pem = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 4096))
        if fdp.ConsumeBool():
            pem = b"-----BEGIN CERTIFICATE REQUEST-----\n" + pem + b"\n-----END CERTIFICATE REQUEST-----\n"
    else:
        try:
            pem = _built(fdp)
        except ValueError:  # the builder refused the fuzzed parts itself: nothing to check
            return
    try:
        csr, sid = AUTHORITY.check_csr(pem)
    except CsrRefused:
        return
    if sid.trust_domain != "demo.local" or is_reserved(sid):
        raise AssertionError(f"accepted {sid.uri}")
    key = csr.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
        raise AssertionError("accepted a key that is not P-256")
    leaf = AUTHORITY.sign_csr(pem, sid)
    if leaf_problem(leaf) is not None:
        raise AssertionError(f"signed a certificate that is not a leaf: {leaf_problem(leaf)}")


def main() -> None:
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
