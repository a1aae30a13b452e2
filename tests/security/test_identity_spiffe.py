"""Finding 11, identities: SPIFFE IDs are parsed with a full match per the SPIFFE ID spec
(no trailing newline, no ``.``/``..``/empty segments, the spec's charset), ``meshward-system/*``
is never issued to a workload (the real CLI refuses, the authority refuses), and a CSR asking
for CA:TRUE or keyCertSign is refused by a real control plane."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from hypothesis import given
from hypothesis import strategies as st

from meshward.control.client import ControlClient, ControlRefused
from meshward.identity.keys import generate_key
from meshward.identity.spiffe import InvalidSpiffeId, SpiffeId, is_reserved, parse_identity
from tests.security.controlled_mesh import ControlledMesh, controlled_mesh
from tests.support.proc import PYTHON, ROOT

REFUSED = [
    "spiffe://demo.local/ns/ml/sa/fraud\n",
    "spiffe://demo.local/ns/ml/sa/fraud\n/x",
    "spiffe://demo.local/ns/../sa/fraud",
    "spiffe://demo.local/ns/./sa/fraud",
    "spiffe://demo.local/ns/ml/sa/..",
    "spiffe://demo.local/ns//sa/fraud",
    "spiffe://demo.local/ns/ml/sa/",
    "spiffe://Demo.local/ns/ml/sa/fraud",
    "spiffe://demo.local:8443/ns/ml/sa/fraud",
    "spiffe://user@demo.local/ns/ml/sa/fraud",
    "spiffe://demo.local/ns/ml/sa/fraud?x=1",
    "spiffe://demo.local/ns/ml/sa/fraud#frag",
    "spiffe://demo.local/ns/ml/sa/fr%2Faud",
    "spiffe://demo.local/ns/ml/sa/fräud",
    "spiffe:///ns/ml/sa/fraud",
    "SPIFFE://demo.local/ns/ml/sa/fraud",
    "spiffe://demo.local/ns/ml/sa/" + "a" * 2100,
    "../..",
    "ml/..",
    "./fraud",
]
_SPEC_SEGMENT = re.compile(r"[A-Za-z0-9._-]+")


@pytest.mark.parametrize("text", REFUSED)
def test_malformed_ids_are_refused(text: str) -> None:
    with pytest.raises(InvalidSpiffeId):  # a certificate's URI SAN: taken exactly as written
        SpiffeId.from_uri(text)
    if text.strip() == text:  # what an operator types is stripped of surrounding blanks first
        with pytest.raises(InvalidSpiffeId):
            parse_identity(text, "demo.local")


@given(st.text(max_size=60))
def test_anything_accepted_is_well_formed_and_round_trips(text: str) -> None:
    try:
        sid = parse_identity(text, "demo.local")
    except InvalidSpiffeId:
        return
    for segment in (sid.namespace, sid.service_account):
        assert _SPEC_SEGMENT.fullmatch(segment) and segment not in (".", "..")
    assert SpiffeId.from_uri(sid.uri) == sid and parse_identity(sid.short, sid.trust_domain) == sid


def _cli(state: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PYTHON, "-m", "meshward", *args, "--state", str(state)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlledMesh]:
    with controlled_mesh(tmp_path_factory.mktemp("reserved"), "") as m:
        yield m


@pytest.mark.e2e
def test_reserved_identities_are_never_issued_to_workloads(mesh: ControlledMesh, tmp_path: Path) -> None:
    assert is_reserved(mesh.state.operator_id)
    for args in (
        ("token", "create", "--id", "meshward-system/control"),
        ("certs", "issue", "--id", "meshward-system/operator", "--out", str(tmp_path / "op")),
    ):
        done = _cli(mesh.state.path, *args)
        assert done.returncode != 0 and "reserved" in done.stderr and "Traceback" not in done.stderr, args
    assert not (tmp_path / "op" / "key.pem").exists()
    with pytest.raises(InvalidSpiffeId, match="reserved"):
        mesh.identity.create_token("spiffe://demo.local/ns/meshward-system/sa/anything")


def _csr(uri: str, ca: bool, key_cert_sign: bool) -> str:
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([]))
    builder = builder.add_extension(
        x509.SubjectAlternativeName([x509.UniformResourceIdentifier(uri)]), critical=False
    )
    if ca:
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
    if key_cert_sign:
        usage = dict.fromkeys(
            ("content_commitment", "key_encipherment", "data_encipherment", "key_agreement", "crl_sign"),
            False,
        )
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True, key_cert_sign=True, encipher_only=False, decipher_only=False, **usage
            ),
            critical=True,
        )
    return builder.sign(generate_key(), hashes.SHA256()).public_bytes(serialization.Encoding.PEM).decode()


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("ca", "key_cert_sign", "why"), [(True, False, "CA:TRUE"), (False, True, "keyCertSign")]
)
def test_csrs_asking_to_sign_certificates_are_refused(
    mesh: ControlledMesh, ca: bool, key_cert_sign: bool, why: str
) -> None:
    token = mesh.identity.create_token("web/webapp")
    csr = _csr("spiffe://demo.local/ns/web/sa/webapp", ca, key_cert_sign)
    with ControlClient(mesh.plane.url, "demo.local", mesh.state.bundle_pem()) as client:
        with pytest.raises(ControlRefused) as refused:
            client.request("POST", "/v1/identity/sign", {"csr": csr, "token": token})
        assert refused.value.status == 403 and why in str(refused.value)
        # the token was not spent by the refusal: a proper CSR still gets its SVID
        good = _csr("spiffe://demo.local/ns/web/sa/webapp", False, False)
        assert "chain" in client.request("POST", "/v1/identity/sign", {"csr": good, "token": token})[1]


@pytest.mark.e2e
def test_a_csr_whose_key_is_off_its_curve_is_a_refusal_not_an_error(mesh: ControlledMesh) -> None:
    """Found by fuzz/fuzz_csr.py: the control plane answered 500 (and skipped the refusal
    accounting) for a CSR whose P-384 point is not on the curve."""
    token = mesh.identity.create_token("web/webapp")
    csr = (Path(__file__).parent / "data" / "csr-key-off-curve.pem").read_text()
    with (
        ControlClient(mesh.plane.url, "demo.local", mesh.state.bundle_pem()) as client,
        pytest.raises(ControlRefused) as refused,
    ):
        client.request("POST", "/v1/identity/sign", {"csr": csr, "token": token})
    assert refused.value.status == 403 and "invalid" in str(refused.value)
