"""The identity commands, run as the real ``meshward`` program against a state in tmp_path."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from cryptography import x509

from meshward.identity.issuance import IdentityService
from meshward.identity.keys import generate_key, make_csr
from meshward.identity.state import MeshState
from tests.identity.pki import mtls_exchange, openssl_verify, run_cli

pytestmark = pytest.mark.e2e


@pytest.fixture
def state(tmp_path: Path) -> Path:
    path = tmp_path / "mesh"
    run_cli("init", "--state", path, "--trust-domain", "acme.test")
    return path


@pytest.fixture(scope="module")
def shared_state(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("shared") / "mesh"
    run_cli("init", "--state", path, "--trust-domain", "acme.test")
    return path


def test_init_creates_a_mesh(state: Path) -> None:
    assert json.loads((state / "mesh.json").read_text())["trust_domain"] == "acme.test"
    for key in ("ca/root.key", "ca/intermediate.key", "operator/key.pem"):
        assert stat.S_IMODE((state / key).stat().st_mode) == 0o600, key


def test_init_refuses_an_existing_mesh_without_force(state: Path) -> None:
    root = (state / "ca" / "root.pem").read_bytes()
    refused = run_cli("init", "--state", state, check=False)
    assert refused.returncode != 0
    assert refused.stderr.count("\n") == 1 and "Traceback" not in refused.stderr
    assert "already exists" in refused.stderr and "--force" in refused.stderr
    assert (state / "ca" / "root.pem").read_bytes() == root
    run_cli("init", "--state", state, "--force")
    assert (state / "ca" / "root.pem").read_bytes() != root


@pytest.mark.parametrize(
    "spelling", ["ml/fraud", "acme.test/ns/ml/sa/fraud", "spiffe://acme.test/ns/ml/sa/fraud"]
)
def test_token_from_the_cli_gets_exactly_one_svid(state: Path, spelling: str) -> None:
    made = run_cli("token", "create", "--state", state, "--id", spelling, "--ttl", "5m")
    token = made.stdout.strip()
    assert made.stdout.count("\n") == 1 and token.startswith("mwjt_"), "stdout holds only the token"
    assert "spiffe://acme.test/ns/ml/sa/fraud" in made.stderr
    with IdentityService(MeshState(state)) as svc:
        csr = make_csr(generate_key(), svc.identity("ml/fraud"))
        assert str(svc.issue(csr, token).spiffe_id) == "spiffe://acme.test/ns/ml/sa/fraud"
    listed = json.loads(run_cli("certs", "--state", state, "--json").stdout)
    assert [c["identity"] for c in listed if c["via"] == "token"] == ["spiffe://acme.test/ns/ml/sa/fraud"]
    refusals = run_cli("certs", "refusals", "--state", state).stdout
    assert refusals.strip() == "no refusals"


def test_certs_issue_then_list_then_revoke(state: Path, tmp_path: Path) -> None:
    out = tmp_path / "client"
    issued = run_cli("certs", "issue", "--state", state, "--id", "ops/cli", "--out", out, "--ttl", "2h")
    assert "spiffe://acme.test/ns/ops/sa/cli" in issued.stdout
    assert stat.S_IMODE((out / "key.pem").stat().st_mode) == 0o600
    assert openssl_verify(out / "bundle.pem", (out / "cert.pem").read_bytes(), tmp_path).returncode == 0
    leaf = x509.load_pem_x509_certificates((out / "cert.pem").read_bytes())[0]
    serial = format(leaf.serial_number, "x")

    table = run_cli("certs", "list", "--state", state).stdout
    row = next(line for line in table.splitlines() if serial in line)
    assert row.split()[0] == "spiffe://acme.test/ns/ops/sa/cli" and "valid" in row

    run_cli("certs", "revoke", serial.upper(), "--state", state)
    rows = json.loads(run_cli("certs", "list", "--json", "--state", state, "--id", "ops/cli").stdout)
    assert [(r["serial"], r["revoked"]) for r in rows] == [(serial, True)]


def test_ca_rotate_root_keeps_old_and_new_talking(state: Path, tmp_path: Path) -> None:
    run_cli("certs", "issue", "--state", state, "--id", "ml/fraud", "--out", tmp_path / "old")
    rotated = run_cli("ca", "rotate", "--root", "--overlap", "12h", "--state", state)
    assert "old root stays in the trust bundle until" in rotated.stdout
    run_cli("certs", "issue", "--state", state, "--id", "web/webapp", "--out", tmp_path / "new")
    bundle = state / "ca" / "bundle.pem"
    assert run_cli("ca", "bundle", "--state", state).stdout.count("BEGIN CERTIFICATE") == 2
    saw = mtls_exchange(tmp_path / "old", tmp_path / "new", bundle, bundle)
    assert saw == ("spiffe://acme.test/ns/web/sa/webapp", "spiffe://acme.test/ns/ml/sa/fraud")
    # the operator identity follows the rotation too
    operator_cert = (state / "operator" / "cert.pem").read_bytes()
    assert openssl_verify(bundle, operator_cert, tmp_path).returncode == 0


BAD_INVOCATIONS = [
    (["token", "create", "--id", "not-an-identity"], "expected <trust-domain>/ns/"),
    (["token", "create", "--id", "other.test/ns/a/sa/b"], "is not in trust domain 'acme.test'"),
    (["token", "create", "--id", "ml/a", "--ttl", "ten minutes"], "--ttl: invalid duration"),
    (["token", "create", "--id", "ml/a", "--uses", "0"], "token uses must be between 1 and"),
    (["certs", "issue", "--id", "ml/a", "--out", "{tmp}/x", "--ttl", "48h"], "at most 24h"),
    (["certs", "revoke", "abcdef"], "no unrevoked certificate with serial abcdef"),
    (["ca", "rotate", "--overlap=-1h"], "--overlap: invalid duration"),
    (["ca", "rotate", "--ca-cert", "{tmp}/nothing.pem"], "--ca-cert and --ca-key go together"),
    (["init", "--force", "--trust-domain", "Not Valid"], "invalid trust domain"),
    (["init", "--force", "--ca-cert", "{tmp}/missing.pem", "--ca-key", "{tmp}/missing.key"], "missing.pem"),
]


@pytest.mark.parametrize(
    ("argv", "message"),
    BAD_INVOCATIONS,
    ids=[" ".join(a[:2]) + f" #{i}" for i, (a, _) in enumerate(BAD_INVOCATIONS)],
)
def test_user_errors_are_one_line_without_traceback(
    shared_state: Path, tmp_path: Path, argv: list[str], message: str
) -> None:
    state = shared_state  # every invocation here is refused before it changes anything
    args = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    result = run_cli(*args, "--state", state, check=False)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("meshward: ") and message in result.stderr


@pytest.mark.parametrize(
    "argv", [["certs"], ["token", "create", "--id", "ml/a"], ["ca", "rotate"], ["ca", "bundle"]]
)
def test_commands_on_a_missing_mesh_say_run_init(tmp_path: Path, argv: list[str]) -> None:
    result = run_cli(*argv, "--state", tmp_path / "none", check=False)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "run `meshward init" in result.stderr
    assert not (tmp_path / "none").exists()
