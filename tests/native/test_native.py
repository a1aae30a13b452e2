"""The compiled hot path and its pure-Python fallback (``meshward.native``).

The default test run must exercise the mypyc build of every module listed in pyproject.toml, and
``MESHWARD_PURE=1`` (which ``make test`` also runs these tests under) must load their sources.
Both modes are also checked in child interpreters, whichever mode this run is in.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.machinery
import json
import os
import subprocess
import tomllib
from typing import Any

import pytest

from meshward import native
from tests.support.proc import PYTHON, ROOT

LISTED = tuple(
    sorted(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["meshward"]["mypyc"]["modules"])
)
PURE = os.environ.get(native.PURE_ENV) == "1"
_EXTENSION = tuple(importlib.machinery.EXTENSION_SUFFIXES)


def _child(code: str, pure: bool) -> Any:
    env = {k: v for k, v in os.environ.items() if k != native.PURE_ENV}
    if pure:
        env[native.PURE_ENV] = "1"
    out = subprocess.run(
        [PYTHON, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=True
    )
    return json.loads(out.stdout)


_FILES = f"""
import importlib, json
print(json.dumps([importlib.import_module(m).__file__ for m in {list(LISTED)!r}]))
"""


def test_the_build_compiled_exactly_the_listed_modules() -> None:
    assert native.status().modules == LISTED, "stale build: run `make .venv/.installed`"
    assert native._built_for_this_python()


def test_this_run_uses_the_mode_it_asked_for() -> None:
    status = native.status()
    assert status.compiled is not PURE, status.reason
    for name in LISTED:
        file = str(importlib.import_module(name).__file__)
        assert file.endswith(".py" if PURE else _EXTENSION), (name, file)


@pytest.mark.parametrize("pure", [False, True], ids=["compiled", "pure"])
def test_a_child_runs_the_mode_its_environment_asks_for(pure: bool) -> None:
    files = _child(_FILES, pure)
    assert len(files) == len(LISTED)
    assert all(f.endswith(".py" if pure else _EXTENSION) for f in files), files


@pytest.mark.parametrize("pure", [False, True], ids=["compiled", "pure"])
def test_meshward_version_says_which(pure: bool) -> None:
    info = _child("from meshward.cli.main import main; main(['version', '--json'])", pure)
    assert info["compiled"] is not pure
    assert info["modules"] == len(LISTED)
    assert info["reason"] == ("MESHWARD_PURE=1" if pure else f"{len(LISTED)} modules compiled with mypyc")


def test_a_source_changed_since_the_build_is_named() -> None:
    source = ROOT / "meshward" / "http" / "parser.py"
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    assert native._changed({"meshward.http.parser": digest}) == []
    assert native._changed({"meshward.http.parser": "0" * 64}) == ["meshward.http.parser"]
    assert native._changed({"meshward.http.gone": digest}) == ["meshward.http.gone"]


def test_the_source_finder_takes_only_the_listed_modules() -> None:
    finder = native._SourceFinder(("meshward.http.parser",))
    spec = finder.find_spec("meshward.http.parser")
    assert spec is not None and spec.origin == str(ROOT / "meshward" / "http" / "parser.py")
    assert isinstance(spec.loader, importlib.machinery.SourceFileLoader)
    assert finder.find_spec("meshward.http.events") is None
    assert finder.find_spec("json") is None
