"""The package layers hold at run time too: importing a package alone loads only its own
layer's package and the layers below (``lint-imports`` checks every import statically, this
checks what ``python -c 'import meshward.X'`` really pulls in). The layers are read from
``pyproject.toml`` (``[tool.importlinter]``), the one place they are written."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _layers() -> list[list[str]]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    contract = next(c for c in config["contracts"] if c["id"] == "layers")
    return [[name.strip() for name in layer.split("|")] for layer in contract["layers"]]


LAYERS = _layers()
PACKAGES = [name for layer in LAYERS for name in layer if (ROOT / name.replace(".", "/")).is_dir()]


@pytest.fixture(scope="module")
def loaded() -> dict[str, set[str]]:
    """For each package, the meshward packages that ``import <package>`` loads in a fresh
    interpreter (all interpreters at once: the machine's cores work in parallel)."""
    code = (
        "import json, sys, importlib; importlib.import_module(sys.argv[1]); "
        "print(json.dumps(sorted({'.'.join(m.split('.')[:2]) for m in sys.modules if m.startswith('meshward.')})))"
    )
    procs = {
        p: subprocess.Popen([sys.executable, "-c", code, p], stdout=subprocess.PIPE, text=True)
        for p in [*PACKAGES, "meshward"]
    }
    result = {}
    for package, proc in procs.items():
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0, f"import {package} failed"
        result[package] = set(json.loads(out))
    return result


def test_every_package_is_in_a_layer() -> None:
    on_disk = {f"meshward.{p.name}" for p in (ROOT / "meshward").iterdir() if (p / "__init__.py").exists()}
    assert on_disk == set(PACKAGES)


@pytest.mark.parametrize("package", PACKAGES)
def test_importing_a_package_loads_nothing_above_it(package: str, loaded: dict[str, set[str]]) -> None:
    level = next(i for i, layer in enumerate(LAYERS) if package in layer)
    # what ``import meshward`` itself loads (meshward.native) comes with any package, and so does
    # the one shared library holding the machine code of every mypyc-compiled module: loading it
    # runs no module of another layer (each compiled module is initialized when it is imported)
    root = loaded["meshward"] | {"meshward._mypyc__mypyc"}
    allowed = {package} | root | {name for layer in LAYERS[level + 1 :] for name in layer}
    above = loaded[package] - allowed
    assert not above, f"import {package} loaded {sorted(above)}, which are not below it"
