"""``meshward check --to <external host>`` answers with the caller's egress rules."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from meshward.cli.main import main
from tests.egress.config import LLM_CONFIG

FILE = LLM_CONFIG


@pytest.mark.parametrize(
    ("caller", "path", "model", "code", "reason"),
    [
        (
            "llm/summarizer-sa",
            "/v1/chat/completions",
            "gpt-4o-mini",
            0,
            "allowed by llm/summarizer-may-chat rules[0]",
        ),
        ("llm/summarizer-sa", "/v1//chat/./completions", "gpt-4o-mini", 0, "allowed by"),  # normalized
        ("llm/summarizer-sa", "/v1/chat/completions", "gpt-4o", 1, "no EgressPolicy rule allows"),
        ("llm/summarizer-sa", "/v1/embeddings", "gpt-4o-mini", 1, "no EgressPolicy rule allows"),
        ("llm/other", "/v1/chat/completions", "gpt-4o-mini", 1, "no EgressPolicy selects"),
    ],
)
def test_check_answers_for_egress(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caller: str,
    path: str,
    model: str,
    code: int,
    reason: str,
) -> None:
    file = tmp_path / "egress.yaml"
    file.write_text(FILE)
    argv = ["check", "--state", str(tmp_path / "none"), "-f", str(file), "--from", caller]
    argv += ["--to", "api.llm.example", "--method", "POST", "--path", path, "--model", model, "--json"]
    assert main(argv) == code
    doc = json.loads(capsys.readouterr().out)
    assert doc["to"] == "api.llm.example" and doc["external_service"] == "llm/llm-provider"
    assert doc["reason"].startswith(reason) and doc["allowed"] == (code == 0)
    assert doc["ai_operation"] == ("chat" if "chat" in path else "embed") and doc["port"] == 443


def test_check_answers_registry_only_for_an_undeclared_host(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    file = tmp_path / "egress.yaml"
    file.write_text(FILE)
    argv = ["check", "--state", str(tmp_path / "none"), "-f", str(file), "--from", "llm/summarizer-sa"]
    argv += ["--to", "api.unknown.example", "--method", "GET", "--path", "/v1/models", "--json"]
    assert main(argv) == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["external_service"] is None and "REGISTRY_ONLY" in doc["reason"] and not doc["allowed"]
