"""``meshward analyze``: each rule on a planted mistake (table), the shipped mesh files clean."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from meshward.analysis import analyze, exit_code
from meshward.cli.main import main
from meshward.resources.loader import load_text
from tests.support.proc import ROOT

BASE = textwrap.dedent(
    """\
    apiVersion: meshward.dev/v1alpha1
    kind: Mesh
    metadata: {name: m}
    spec: {trustDomain: demo.local, trustDomainAliases: [cluster.local]}
    ---
    apiVersion: meshward.dev/v1alpha1
    kind: Workload
    metadata: {name: chat, namespace: llm, labels: {app: chat}}
    spec: {command: ["true"]}
    ---
    """
)


def _policy(spec: str, namespace: str = "llm", kind: str = "AuthorizationPolicy") -> str:
    return (
        f"apiVersion: meshward.dev/v1alpha1\nkind: {kind}\nmetadata: {{name: p, namespace: {namespace}}}\n"
        f"spec: {spec}\n"
    )


CLEAN_ALLOW = "{selector: {matchLabels: {app: chat}}, rules: [{from: [{source: {principals: [web/app]}}]}]}"

# (id, policy document, expected codes)
CASES = [
    ("clean", _policy(CLEAN_ALLOW), []),
    (
        "aliased-principal-is-fine",
        _policy("{rules: [{from: [{source: {principals: [cluster.local/ns/web/sa/app]}}]}]}"),
        [],
    ),
    (
        "selector-matches-nothing",
        _policy(
            "{selector: {matchLabels: {app: chta}}, rules: [{from: [{source: {principals: [web/app]}}]}]}"
        ),
        ["MW001"],
    ),
    ("namespace-without-workloads", _policy(CLEAN_ALLOW, namespace="lmm"), ["MW002"]),
    (
        "foreign-trust-domain",
        _policy("{rules: [{from: [{source: {principals: [other.td/ns/web/sa/app]}}]}]}"),
        ["MW003"],
    ),
    (
        "lower-case-method",
        _policy(
            "{rules: [{from: [{source: {principals: [web/app]}}], to: [{operation: {methods: [get]}}]}]}"
        ),
        ["MW004"],
    ),
    (
        "unknown-method",
        _policy(
            "{rules: [{from: [{source: {principals: [web/app]}}], to: [{operation: {methods: [FETCH]}}]}]}"
        ),
        ["MW004"],
    ),
    ("request-principals", _policy("{rules: [{from: [{source: {requestPrincipals: ['*']}}]}]}"), ["MW005"]),
    ("deny-without-rules", _policy("{action: DENY}"), ["MW006"]),
    (
        "deny-excluded",
        _policy("{action: DENY, rules: [{to: [{operation: {methods: [GET], notMethods: [GET]}}]}]}"),
        ["MW006"],
    ),
    (
        "deny-lower-case",
        _policy("{action: DENY, rules: [{to: [{operation: {methods: [delete]}}]}]}"),
        ["MW004", "MW006"],
    ),
    (
        "deny-foreign",
        _policy("{action: DENY, rules: [{from: [{source: {principals: [x.td/ns/a/sa/b]}}]}]}"),
        ["MW003", "MW006"],
    ),
    ("allow-everything", _policy("{rules: [{}]}"), ["MW007"]),
    (
        "ratelimit-selector",
        _policy(
            "{selector: {matchLabels: {app: nope}}, limits: [{name: l, requests: {limit: 1, per: second}}]}",
            kind="RateLimitPolicy",
        ),
        ["MW001"],
    ),
]


@pytest.mark.parametrize(("case", "policy", "codes"), CASES, ids=[c[0] for c in CASES])
def test_each_planted_mistake_is_flagged(case: str, policy: str, codes: list[str]) -> None:
    findings = analyze(load_text(BASE + policy, f"{case}.yaml"))
    assert sorted(f.code for f in findings) == codes
    assert exit_code(findings) == (1 if codes else 0)
    for f in findings:
        assert f.level == "warning" and f.fix and f.resource.endswith("/p")


def test_policy_only_files_skip_the_workload_rules() -> None:
    findings = analyze(
        load_text(_policy("{selector: {matchLabels: {app: x}}}", namespace="nowhere"), "p.yaml")
    )
    assert findings == []


@pytest.mark.parametrize("path", ["examples/demo/mesh.yaml", "examples/quickstart/mesh.yaml"])
def test_the_shipped_mesh_files_analyze_clean(
    path: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["analyze", "--state", str(tmp_path / "none"), "-f", str(ROOT / path)]) == 0
    assert "no problems found" in capsys.readouterr().out


def test_analyze_cli_exit_codes_and_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    planted = tmp_path / "planted.yaml"
    planted.write_text(BASE + _policy("{rules: [{}]}"))
    state = ["--state", str(tmp_path / "none")]
    assert main(["analyze", *state, "-f", str(planted), "--json"]) == 1
    import json

    [finding] = json.loads(capsys.readouterr().out)["findings"]
    assert finding["code"] == "MW007" and finding["resource"] == "AuthorizationPolicy llm/p"
    broken = tmp_path / "broken.yaml"
    broken.write_text("kind: Nope\n")
    assert main(["analyze", *state, "-f", str(broken)]) == 2


def test_apply_prints_the_warnings_about_what_it_applied(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    planted = tmp_path / "planted.yaml"
    planted.write_text(BASE + _policy("{rules: [{to: [{operation: {methods: [get]}}]}]}"))
    assert main(["init", "--state", str(tmp_path / "s")]) == 0
    assert main(["apply", "--state", str(tmp_path / "s"), "-f", str(planted)]) == 0
    err = capsys.readouterr().err
    assert "warning [MW004] AuthorizationPolicy llm/p: rules[0]: method 'get' is lower case" in err
    assert "no control plane runs: sidecars get it when the mesh starts" in err


@pytest.mark.parametrize("command", [["apply", "-f"], ["delete", "-f"], ["analyze", "-f"], ["up", "-f"]])
def test_one_wording_for_a_missing_file(
    command: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nope.yaml"
    code = main([command[0], "--state", str(tmp_path / "s"), *command[1:], str(missing)])
    captured = capsys.readouterr()
    assert code != 0 and f"cannot read {missing}: No such file or directory" in captured.out + captured.err
