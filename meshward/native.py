"""Compiled or pure: which form of the hot modules this process runs, and the switch between them.

``setup.py`` compiles the modules listed in pyproject.toml (``[tool.meshward.mypyc]``) with mypyc
into C extensions beside their sources, and records the sha256 of each compiled source in
``meshward/_mypyc.json``. Python's import system prefers an extension over a ``.py`` in the same
directory, so to run the sources instead this module puts a finder at the front of
``sys.meta_path`` that loads the listed modules from their ``.py`` files. It does that when

- ``MESHWARD_PURE=1`` is set (the tests run the compiled modules' unit tests that way too), or
- a compiled source changed since the build (an edit without ``make .venv/.installed``): running
  the old machine code would test code that is not in the tree, so the whole set runs as Python
  and a warning on stderr says how to rebuild.

All compiled modules live in one shared library and call each other directly, so the switch is
all or nothing, decided once, by :func:`install` from ``meshward/__init__.py`` before any of them is
imported. :func:`status` says what was decided (``meshward version``, the sidecar's start log).
"""

from __future__ import annotations

import hashlib
import importlib.abc
import importlib.machinery
import importlib.util
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

__all__ = ["PURE_ENV", "NativeStatus", "install", "status"]

PURE_ENV = "MESHWARD_PURE"
_PACKAGE_DIR = Path(__file__).resolve().parent
_MANIFEST = _PACKAGE_DIR / "_mypyc.json"


@dataclass(frozen=True)
class NativeStatus:
    """What :func:`install` decided: ``compiled`` is true when the listed modules run as C."""

    compiled: bool
    modules: tuple[str, ...]  # the modules the build compiled (empty: nothing was built)
    reason: str  # why compiled or not, for a person

    def as_dict(self) -> dict[str, Any]:
        return {"compiled": self.compiled, "modules": len(self.modules), "reason": self.reason}


class _SourceFinder(importlib.abc.MetaPathFinder):
    """Finds the listed modules as their ``.py`` sources, ahead of the compiled extensions."""

    def __init__(self, modules: tuple[str, ...]) -> None:
        self.modules = frozenset(modules)

    def find_spec(
        self, fullname: str, path: Any = None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in self.modules:
            return None
        source = _PACKAGE_DIR.joinpath(*fullname.split(".")[1:]).with_suffix(".py")
        return importlib.util.spec_from_file_location(fullname, source)


_status: NativeStatus | None = None


def _built_modules() -> dict[str, str]:
    try:
        data = json.loads(_MANIFEST.read_text())
    except FileNotFoundError:
        return {}
    modules: dict[str, str] = data["modules"]
    return modules


def _changed(built: dict[str, str]) -> list[str]:
    changed = []
    for module, digest in built.items():
        source = _PACKAGE_DIR.joinpath(*module.split(".")[1:]).with_suffix(".py")
        try:
            now = hashlib.sha256(source.read_bytes()).hexdigest()
        except FileNotFoundError:
            now = ""
        if now != digest:
            changed.append(module)
    return changed


def install() -> NativeStatus:
    """Decide compiled or pure for this process, once; install the source finder if pure."""
    global _status
    if _status is not None:
        return _status
    built = _built_modules()
    modules = tuple(sorted(built))
    if not built:
        _status = NativeStatus(False, (), "not compiled (installed with MESHWARD_COMPILE=0, or no build)")
        return _status
    if os.environ.get(PURE_ENV) == "1":
        reason = f"{PURE_ENV}=1"
    elif changed := _changed(built):
        reason = f"sources changed since the build: {', '.join(changed)}"
        print(
            f"meshward: running pure Python: {reason}; rebuild with `make .venv/.installed`",
            file=sys.stderr,
        )
    else:
        _status = NativeStatus(True, modules, f"{len(modules)} modules compiled with mypyc")
        return _status
    sys.meta_path.insert(0, _SourceFinder(modules))
    _status = NativeStatus(False, modules, reason)
    return _status


def status() -> NativeStatus:
    """The decision :func:`install` made for this process."""
    return install()
