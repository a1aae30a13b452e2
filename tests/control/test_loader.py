"""The YAML loader: exact locations for every refusal, and never a traceback on garbage."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshward.resources.loader import LoadError, load_file, load_text

GOOD = textwrap.dedent(
    """\
    apiVersion: meshward.dev/v1alpha1
    kind: Mesh
    metadata: {name: mesh, namespace: meshward-system}
    spec:
      trustDomain: demo.local
    ---
    apiVersion: meshward.dev/v1alpha1
    kind: Workload
    metadata:
      name: fraud-model-v1
      namespace: ml
      labels: {app: fraud-model, version: v1}
    spec:
      service: fraud-model
      serviceAccount: fraud-model
      port: 0
      command: ["python", "-m", "x", "--port", "{port}"]
      readiness: {httpGet: /ready}
    """
)


def test_good_file_loads_every_document() -> None:
    resources = load_text(GOOD, "mesh.yaml")
    assert [r.ref for r in resources] == ["Mesh meshward-system/mesh", "Workload ml/fraud-model-v1"]
    workload = resources[1]
    assert workload.spec.service_account == "fraud-model"  # type: ignore[attr-defined]


def test_empty_documents_are_skipped() -> None:
    assert load_text("---\n---\n", "x.yaml") == []


def _workload(spec: str, name: str = "w") -> str:
    head = f"apiVersion: meshward.dev/v1alpha1\nkind: Workload\nmetadata: {{name: {name}, namespace: ml}}\n"
    return head + "spec:\n" + textwrap.indent(textwrap.dedent(spec), "  ")


# (file text, expected first problem exactly)
CASES = [
    (
        GOOD + "---\n" + _workload("port: 70000\n"),
        "f.yaml:24: Workload ml/w: spec.port: Input should be less than or equal to 65535",
    ),
    (
        _workload("command: [a]\nservicAccount: x\n"),
        "f.yaml:6: Workload ml/w: spec.servicAccount: unknown field (check its spelling)",
    ),
    (
        _workload("readiness:\n  httpGet: health\n"),
        "f.yaml:6: Workload ml/w: spec.readiness.httpGet: String should match pattern '^/'",
    ),
    (
        _workload("command:\n- ok\n- [nested]\n"),
        "f.yaml:7: Workload ml/w: spec.command[1]: Input should be a valid string",
    ),
    (
        _workload("port: 1\nport: 2\n"),
        "f.yaml:6: document 1: spec.port: duplicate key 'port'",
    ),
    (
        "apiVersion: meshward.dev/v1alpha1\nkind: Gateway\nmetadata: {name: g}\nspec: {}\n",
        "f.yaml:2: Gateway default/g: kind: unknown kind 'Gateway' (known: AlertSink, AuthorizationPolicy, "
        "DataProtectionPolicy, DetectionPolicy, Mesh, RateLimitPolicy, Workload)",
    ),
    (
        "apiVersion: v1\nkind: Workload\nmetadata: {name: g}\nspec: {}\n",
        "f.yaml:1: Workload default/g: apiVersion: 'v1' is not accepted for Workload (use meshward.dev/v1alpha1)",
    ),
    (
        "apiVersion: meshward.dev/v1alpha1\nkind: Workload\nmetadata: {name: Bad_Name}\nspec: {}\n",
        "f.yaml:3: Workload default/Bad_Name: metadata.name: String should match pattern "
        "'^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$'",
    ),
    (
        "apiVersion: meshward.dev/v1alpha1\nkind: Workload\nmetadata: {namespace: ml}\nspec: {}\n",
        "f.yaml:3: Workload ml/?: metadata.name: required field is missing",
    ),
    ("key: [unclosed\n", "f.yaml:2: file: invalid YAML: expected ',' or ']', but got '<stream end>'"),
    (
        "- just\n- a list\n",
        "f.yaml:1: document 1: a resource must be a mapping with apiVersion, kind, metadata and spec",
    ),
    (
        _workload("port: 1\n") + "---\n" + _workload("port: 2\n"),
        "f.yaml:7: Workload ml/w: defined twice in this file (first at line 1)",
    ),
]


@pytest.mark.parametrize(("text", "expected"), CASES)
def test_refusals_name_file_line_resource_and_field(text: str, expected: str) -> None:
    with pytest.raises(LoadError) as info:
        load_text(text, "f.yaml")
    assert str(info.value.problems[0]) == expected


def test_all_problems_of_a_document_are_listed() -> None:
    with pytest.raises(LoadError) as info:
        load_text(_workload("port: -1\nworkdir: 3\n"), "f.yaml")
    assert [p.line for p in info.value.problems] == [5, 6]
    assert "and 1 more problem" in str(info.value)


def test_alias_bomb_is_refused() -> None:
    bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
    for i in range(1, 8):
        prev = chr(ord("a") + i - 1)
        cur = chr(ord("a") + i)
        bomb += f"{cur}: &{cur} [*{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}]\n"
    with pytest.raises(LoadError, match="too large"):
        load_text(bomb, "bomb.yaml")


def test_missing_file_is_a_load_error(tmp_path: Path) -> None:
    with pytest.raises(LoadError, match="No such file"):
        load_file(tmp_path / "nope.yaml")


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.text(max_size=200), st.binary(max_size=200)))
def test_garbage_is_refused_or_loaded_never_a_traceback(text: str | bytes) -> None:
    try:
        load_text(text, "g.yaml")
    except LoadError:
        pass


_yaml_ish = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=10)),
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=60, deadline=None)
@given(
    st.sampled_from(["Mesh", "Workload", "AuthorizationPolicy", "RateLimitPolicy", "Nope"]),
    _yaml_ish,
    _yaml_ish,
)
def test_structured_garbage_in_known_kinds_never_a_traceback(
    kind: str, metadata: object, spec: object
) -> None:
    import yaml

    doc = {"apiVersion": "meshward.dev/v1alpha1", "kind": kind, "metadata": metadata, "spec": spec}
    try:
        load_text(yaml.safe_dump(doc), "g.yaml")
    except LoadError as exc:
        assert exc.problems and exc.problems[0].line >= 1
