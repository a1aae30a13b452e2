"""The CLI builds its parser without importing the mesh: ``meshward --help`` and the parse of any
command load only the command modules (stdlib at their top), and one broken command module
leaves the other commands working."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import meshward.cli.commands as commands_pkg
from meshward.cli.main import build_parser, command_names, main

#: What the commands import when they run, never to build the parser.
HEAVY = (
    "pydantic",
    "cryptography",
    "meshward.control",
    "meshward.identity",
    "meshward.resources",
    "meshward.audit",
    "meshward.config",
    "meshward.mesh",
    "meshward.authz",
    "meshward.proxy",
)


def _loaded_after(code: str) -> list[str]:
    script = f"import sys, json\n{code}\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    return list(json.loads(out.stdout.splitlines()[-1]))


@pytest.mark.parametrize("command", sorted(command_names()))
def test_a_commands_parser_imports_nothing_heavy(command: str) -> None:
    loaded = _loaded_after(f"from meshward.cli.main import build_parser\nbuild_parser({command!r})")
    assert f"meshward.cli.commands.{command}" in loaded
    heavy = [m for m in loaded if m.split(".")[0] in HEAVY or ".".join(m.split(".")[:2]) in HEAVY]
    assert heavy == []


def test_one_command_is_parsed_with_its_module_alone() -> None:
    loaded = _loaded_after("from meshward.cli.main import build_parser\nbuild_parser('status')")
    commands = [m for m in loaded if m.startswith("meshward.cli.commands.")]
    assert commands == ["meshward.cli.commands.status"]


def test_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    listed = capsys.readouterr().out
    for name in command_names():
        assert f"    {name} " in listed


def test_defaults_kept_in_the_cli_equal_their_sources() -> None:
    from meshward.audit.formats import FORMATS
    from meshward.cli.commands import audit, control, up
    from meshward.control.server import DEFAULT_LISTEN
    from meshward.mesh.workload import CONTROL_PORT

    assert audit.FORMATS == FORMATS
    assert f"{DEFAULT_LISTEN[0]}:{DEFAULT_LISTEN[1]}" == control.DEFAULT_LISTEN_TEXT
    assert up.CONTROL_PORT == CONTROL_PORT


@pytest.fixture
def broken_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    name = "zz_half_edited"
    (tmp_path / f"{name}.py").write_text("def register(sub, common)  # the colon is missing\n    pass\n")
    monkeypatch.setattr(commands_pkg, "__path__", [*commands_pkg.__path__, str(tmp_path)])
    monkeypatch.delitem(sys.modules, f"{commands_pkg.__name__}.{name}", raising=False)
    return name


def test_a_broken_command_module_breaks_only_its_command(
    broken_command: str, state_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert broken_command in command_names()
    help_text = build_parser().format_help()
    assert f"{broken_command}" in help_text and "unavailable: SyntaxError" in help_text
    assert main([broken_command, "--anything"]) == 1
    assert f"the {broken_command!r} command cannot load" in capsys.readouterr().err
    # the others still parse and run
    assert main(["status", "--state", str(state_dir)]) == 1
    assert "no mesh in" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [
        ["--state", "{d}", "certs", "list"],
        ["--state={d}", "certs", "list"],
        ["certs", "--state", "{d}", "list"],
        ["certs", "list", "--state", "{d}"],
    ],
)
def test_state_goes_before_or_after_the_command(argv: list[str], tmp_path: Path) -> None:
    state = tmp_path / "mesh"
    init = subprocess.run(
        [sys.executable, "-m", "meshward", "init", "--state", str(state), "--trust-domain", "x.test"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert init.returncode == 0, init.stderr
    args = [a.replace("{d}", str(state)) for a in argv]
    out = subprocess.run(
        [sys.executable, "-m", "meshward", *args], capture_output=True, text=True, timeout=60, check=False
    )
    assert out.returncode == 0, out.stderr
    assert "spiffe://x.test/ns/meshward-system/sa/operator" in out.stdout


def test_every_command_has_a_description() -> None:
    import argparse

    parser = build_parser()
    [sub] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    missing = [name for name, p in sub.choices.items() if not p.description]
    assert missing == []


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    from meshward import __version__

    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.strip() == f"meshward {__version__}"
