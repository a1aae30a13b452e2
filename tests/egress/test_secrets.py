"""The secret store (0600, names and dates only in listings) and who may receive a secret."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from meshward.config.snapshot import WorkloadInfo
from meshward.egress.secrets import SecretError, SecretStore, may_receive, release_secret
from meshward.resources.loader import load_text
from tests.egress.config import LLM_CONFIG
from tests.support.proc import PYTHON, ROOT

RESOURCES = load_text(
    LLM_CONFIG
    + """\
---
apiVersion: meshward.dev/v1alpha1
kind: ExternalService
metadata: {name: search, namespace: tools}
spec: {hosts: [search.example], credential: {secret: search-key, header: x-api-key, format: "{secret}"}}
"""
)
SUMMARIZER = WorkloadInfo("summarizer", "llm", "summarizer", "summarizer-sa", {"app": "summarizer"})
OTHER = WorkloadInfo("other", "llm", "other", "other", {"app": "other"})


def test_store_is_private_and_lists_names_and_dates_only(tmp_path: Path) -> None:
    store = SecretStore(tmp_path)
    assert store.list() == []
    store.set("llm-key", "sk-one\n")
    store.set("search-key", "k2")
    assert store.get("llm-key") == "sk-one"
    assert (tmp_path / "secrets").stat().st_mode & 0o777 == 0o700
    assert (tmp_path / "secrets" / "llm-key").stat().st_mode & 0o777 == 0o600
    listed = [i.to_json() for i in store.list()]
    assert [i["name"] for i in listed] == ["llm-key", "search-key"]
    assert all(set(i) == {"name", "updated"} and i["updated"].endswith("Z") for i in listed)
    store.set("llm-key", "sk-two")  # rotation replaces the value
    assert store.get("llm-key") == "sk-two"


@pytest.mark.parametrize(
    ("name", "value", "error"),
    [
        ("../escape", "v", "invalid secret name"),
        ("UPPER", "v", "invalid secret name"),
        ("ok", "", "empty"),
        ("ok", "two\nlines", "one line"),
        ("ok", "nul\x00", "one line"),
        ("ok", "é", "ASCII"),
        ("ok", "x" * 9000, "longer than"),
    ],
)
def test_bad_names_and_values_are_refused(tmp_path: Path, name: str, value: str, error: str) -> None:
    with pytest.raises(SecretError, match=error):
        SecretStore(tmp_path).set(name, value)
    assert not (tmp_path / "secrets" / "escape").exists()


def test_only_workloads_allowed_to_reach_the_service_receive_its_secret(tmp_path: Path) -> None:
    assert (
        may_receive(RESOURCES, SUMMARIZER, "llm-key", "meshward-system", "demo.local")
        == "api.llm.example:443"
    )
    assert may_receive(RESOURCES, OTHER, "llm-key", "meshward-system", "demo.local") is None
    assert may_receive(RESOURCES, SUMMARIZER, "search-key", "meshward-system", "demo.local") is None
    assert may_receive(RESOURCES, SUMMARIZER, "nobody-uses-this", "meshward-system", "demo.local") is None
    SecretStore(tmp_path).set("llm-key", "sk-value")
    doc = release_secret(tmp_path, RESOURCES, "demo.local", "llm", "summarizer", "llm-key")
    assert doc == {"name": "llm-key", "value": "sk-value", "via": "api.llm.example:443"}
    with pytest.raises(PermissionError, match="llm/other"):
        release_secret(tmp_path, RESOURCES, "demo.local", "llm", "other", "llm-key")


def test_cli_errors_are_one_line(tmp_path: Path) -> None:
    state = tmp_path / "state"
    run = subprocess.run(
        [PYTHON, "-m", "meshward", "secret", "set", "llm-key", "--state", str(state)],
        input="v\n",
        capture_output=True,
        text=True,
        timeout=30,
        cwd=ROOT,
    )
    assert run.returncode != 0 and "no mesh" in run.stderr and len(run.stderr.strip().splitlines()) == 1
