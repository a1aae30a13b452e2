"""``dashboard``, ``tap`` and ``top`` without a running mesh: one line on stderr, exit 1."""

from __future__ import annotations

from pathlib import Path

import pytest

from meshward.cli.main import main


@pytest.mark.parametrize(
    "argv",
    [["dashboard", "--print-url"], ["tap", "--count", "1"], ["top", "--once"]],
)
def test_no_mesh_is_one_clear_line(
    argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([argv[0], "--state", str(tmp_path / "none"), *argv[1:]]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("meshward: ") and "no mesh" in err[0]


def test_an_initialized_but_stopped_mesh_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "state"
    assert main(["init", "--state", str(state), "--trust-domain", "stopped.local"]) == 0
    capsys.readouterr()
    for argv in (["dashboard", "--print-url"], ["tap"], ["top", "--once"]):
        assert main([argv[0], "--state", str(state), *argv[1:]]) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and ("no mesh is running" in err[0] or "no sidecar is running" in err[0]), err
    assert not (state / "dashboard" / "server.json").exists()
