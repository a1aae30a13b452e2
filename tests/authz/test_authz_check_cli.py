"""``meshward check``: the whole decision table through the CLI, and a sample as a real process.

In process, the table runs through :func:`meshward.cli.main.main` (argument parsing, the YAML
loader, target split, path normalization, classification, engine, JSON output); a sample runs
as ``python -m meshward check`` subprocesses to pin the exit codes and the text output.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from meshward.cli.main import main
from tests.authz.cases import CASES, Case, documents, policy


def _write(tmp_path: Path, case: Case) -> Path:
    path = tmp_path / "mesh.yaml"
    path.write_text(yaml.safe_dump_all(documents(case.policies, case.default_policy)))
    return path


def _argv(tmp_path: Path, case: Case, file: Path) -> list[str]:
    argv = [
        "check",
        "--state",
        str(tmp_path / "no-mesh"),
        "-f",
        str(file),
        "--from",
        case.source,
        "--to",
        case.to,
        "--method",
        case.method,
        "--path",
        case.path,
        "--source-ip",
        case.source_ip,
        "--time",
        case.at,
    ]
    for name, value in case.headers.items():
        argv += ["--header", f"{name}={value}"]
    if case.model is not None:
        argv += ["--model", case.model]
    if case.port is not None:
        argv += ["--port", str(case.port)]
    return argv


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_table_through_check(case: Case, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main([*_argv(tmp_path, case, _write(tmp_path, case)), "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == (0 if case.allowed else 1)
    assert report["allowed"] is case.allowed
    if case.rejected is not None:
        assert report["decision"] == "reject" and case.rejected in report["reason"]
        return
    [decision] = report["workloads"]
    assert decision["reason"] == case.reason
    if case.dry_run is None:
        assert decision["dry_run"] is None
    else:
        assert (decision["dry_run"]["allowed"], decision["dry_run"]["reason"]) == case.dry_run
    assert tuple(decision["audit"]) == case.audit


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "meshward", *argv], capture_output=True, text=True, timeout=60, check=False
    )


SAMPLE = ["models-from-body", "encoded-dotdot-admin"]


@pytest.mark.parametrize("case_id", SAMPLE)
def test_sample_as_a_process(case_id: str, tmp_path: Path) -> None:
    case = next(c for c in CASES if c.id == case_id)
    done = _run(_argv(tmp_path, case, _write(tmp_path, case)))
    assert done.returncode == (0 if case.allowed else 1), done.stderr
    first = done.stdout.splitlines()[0]
    assert first.startswith("ALLOW" if case.allowed else "DENY")
    assert case.reason in done.stdout
    assert done.stderr == ""


def _main(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_malformed_path_is_rejected_like_the_sidecar(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    case = next(c for c in CASES if c.id == "allow-all")
    argv = _argv(tmp_path, case, _write(tmp_path, case))
    argv[argv.index("--path") + 1] = "/v2/models/%zz/infer"
    code, out, _ = _main(argv, capsys)
    assert code == 1
    assert out.startswith("REJECT")
    assert "percent-encoding" in out


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--from", "not an identity"], "--from"),
        (["--to", "nowhere.ml"], "no Workload serves 'nowhere.ml'"),
        (["--time", "yesterday"], "--time"),
        (["--header", "novalue"], "NAME=VALUE"),
    ],
)
def test_usage_errors_exit_2(
    extra: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    case = next(c for c in CASES if c.id == "allow-all")
    code, out, err = _main(_argv(tmp_path, case, _write(tmp_path, case)) + extra, capsys)
    assert code == 2
    assert message in err
    assert err.count("\n") == 1 and out == ""


def test_invalid_policy_file_names_the_line(tmp_path: Path) -> None:
    """As a process: the error is one line on stderr, exit 2, no traceback."""
    bad = policy("bad", {"action": "CUSTOM", "provider": {"name": "ext"}, "rules": [{}]})
    file = tmp_path / "bad.yaml"
    file.write_text(yaml.safe_dump_all(documents([bad])))
    case = next(c for c in CASES if c.id == "allow-all")
    done = _run(_argv(tmp_path, case, file))
    assert done.returncode == 2
    assert "CUSTOM" in done.stderr and "bad.yaml:" in done.stderr
    assert "Traceback" not in done.stderr and done.stderr.count("\n") == 1


def test_no_mesh_and_no_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = [
        "check",
        "--state",
        str(tmp_path / "none"),
        "--from",
        "a/b",
        "--to",
        "x",
        "--method",
        "GET",
        "--path",
        "/",
    ]
    code, _, err = _main(argv, capsys)
    assert code == 2
    assert "nothing to check against" in err


def test_policies_from_the_mesh_store_and_a_what_if_overlay(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without -f the mesh's current generation decides; -f lays files over it (what-if)."""
    monkeypatch.delenv("MESHWARD_STATE", raising=False)
    state = tmp_path / "state"
    allow = policy("allow-webapp", {"rules": [{"from": [{"source": {"principals": ["web/webapp"]}}]}]})
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump_all(documents([allow])[1:]))  # no Mesh: init fixed the trust domain
    assert main(["init", "--state", str(state), "--trust-domain", "corp.example"]) == 0
    assert main(["apply", "--state", str(state), "-f", str(config)]) == 0
    capsys.readouterr()
    base = [
        "check",
        "--state",
        str(state),
        "--to",
        "fraud-model.ml",
        "--method",
        "POST",
        "--path",
        "/v2/models/fraud/infer",
    ]
    code, out, _ = _main([*base, "--from", "web/webapp", "--json"], capsys)
    report = json.loads(out)
    assert code == 0 and report["workloads"][0]["reason"] == "allowed by ml/allow-webapp rules[0]"
    assert report["from"] == "spiffe://corp.example/ns/web/sa/webapp"  # the mesh's trust domain
    code, out, _ = _main([*base, "--from", "batch/job"], capsys)
    assert code == 1 and "no ALLOW policy matched" in out
    what_if = tmp_path / "deny.yaml"
    what_if.write_text(
        yaml.safe_dump(
            policy(
                "deny-infer",
                {"action": "DENY", "rules": [{"to": [{"operation": {"aiOperations": ["infer"]}}]}]},
            )
        )
    )
    code, out, _ = _main([*base, "--from", "web/webapp", "-f", str(what_if)], capsys)
    assert code == 1 and "denied by ml/deny-infer rules[0]" in out
