"""Build hook: compile the hot modules listed in ``[tool.meshward.mypyc]`` (pyproject.toml) with mypyc.

Everything else about the package lives in pyproject.toml. The listed modules become C extensions
next to their sources (one shared library, ``meshward/_mypyc__mypyc*.so``, plus a small shim per
module); after a successful build ``meshward/_mypyc.json`` records the sha256 of every compiled
source, so ``meshward.native`` can tell a stale build and ``MESHWARD_PURE=1`` can run the sources.

A failed compile fails the install: there is no silent fallback to pure Python. The one explicit
opt-out, for a machine without a C compiler, is ``MESHWARD_COMPILE=0`` at install time.
The build type-checks with the project's own mypy config, so it runs without build isolation
(the Makefile installs the dependencies first, then ``pip install --no-build-isolation -e .``).
"""

from __future__ import annotations

import hashlib
import json
import os
import tomllib
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent
MANIFEST = Path("meshward") / "_mypyc.json"
GROUP = "meshward._mypyc"  # the shared library: meshward/_mypyc__mypyc.<abi>.so


def compiled_modules() -> list[str]:
    """The dotted names of the modules to compile, from pyproject.toml."""
    with (ROOT / "pyproject.toml").open("rb") as f:
        config = tomllib.load(f)
    modules: list[str] = config["tool"]["meshward"]["mypyc"]["modules"]
    return modules


def source_of(module: str) -> Path:
    return Path(*module.split(".")).with_suffix(".py")


class BuildNative(build_ext):
    """``build_ext`` that runs mypyc only when extensions are built (not for the metadata), and
    writes the manifest after a successful build."""

    def finalize_options(self) -> None:
        from mypyc.build import mypycify

        os.chdir(ROOT)  # mypy reads [tool.mypy] from ./pyproject.toml
        self.distribution.ext_modules = mypycify(
            [str(source_of(m)) for m in compiled_modules()],
            group_name=GROUP,
            target_dir=str(Path("build") / "mypyc"),
        )
        super().finalize_options()

    def run(self) -> None:
        # A failed build leaves the old manifest: meshward.native then sees the changed sources
        # and runs them as Python rather than the old extensions.
        super().run()
        _remove_stale_extensions()
        manifest = {
            m: hashlib.sha256((ROOT / source_of(m)).read_bytes()).hexdigest() for m in compiled_modules()
        }
        text = json.dumps({"modules": manifest}, indent=1, sort_keys=True) + "\n"
        targets = [Path(self.build_lib) / MANIFEST]
        if self.inplace or getattr(self, "editable_mode", False):
            targets.append(ROOT / MANIFEST)
        for target in targets:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)


def _remove_stale_extensions() -> None:
    """Delete the extension of a module no longer in the list (an earlier build's shim would still
    be imported before the module's source, and fail: the new shared library lacks its code)."""
    wanted = {ROOT / source_of(m) for m in compiled_modules()}
    for ext in (ROOT / "meshward").rglob("*.so"):
        if ext.name.startswith("_mypyc__mypyc"):
            continue
        source = ext.with_name(ext.name.split(".", 1)[0] + ".py")
        if source not in wanted:
            ext.unlink()


if os.environ.get("MESHWARD_COMPILE") == "0":
    print("meshward: MESHWARD_COMPILE=0: installing pure Python, nothing compiled")
    (ROOT / MANIFEST).unlink(missing_ok=True)
    for old in (ROOT / "meshward").rglob("*.so"):  # an earlier build's extensions would still load
        old.unlink()
    setup()
else:
    # A stand-in, so that build_ext runs (and the wheel is platform-specific): BuildNative
    # replaces it with mypyc's extensions.
    setup(ext_modules=[Extension(f"{GROUP}__mypyc", sources=[])], cmdclass={"build_ext": BuildNative})
