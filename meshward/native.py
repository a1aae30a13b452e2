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

# Imported by every ``import meshward`` (the CLI's start-up too): stdlib modules that are cheap
# to import or already loaded, no dataclasses/pathlib/importlib.abc.
import hashlib
import json
import os
import sys
from importlib.machinery import EXTENSION_SUFFIXES, ModuleSpec
from types import ModuleType
from typing import Any

__all__ = ["PURE_ENV", "NativeStatus", "install", "status"]

PURE_ENV = "MESHWARD_PURE"
_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
_MANIFEST = os.path.join(_PACKAGE_DIR, "_mypyc.json")


class NativeStatus:
    """What :func:`install` decided: ``compiled`` is true when the listed modules run as C."""

    __slots__ = ("compiled", "modules", "reason")

    def __init__(self, compiled: bool, modules: tuple[str, ...], reason: str) -> None:
        self.compiled = compiled
        self.modules = modules  # the modules the build compiled (empty: nothing was built)
        self.reason = reason  # why compiled or not, for a person

    def as_dict(self) -> dict[str, Any]:
        return {"compiled": self.compiled, "modules": len(self.modules), "reason": self.reason}

    def __repr__(self) -> str:
        return f"NativeStatus(compiled={self.compiled}, modules={len(self.modules)}, reason={self.reason!r})"


def _source(module: str) -> str:
    """``meshward.http.parser`` → ``<package dir>/http/parser.py``."""
    return os.path.join(_PACKAGE_DIR, *module.split(".")[1:]) + ".py"


class _SourceFinder:
    """A ``sys.meta_path`` finder: the listed modules as their ``.py`` sources, ahead of the
    compiled extensions (which the path finder would pick first)."""

    def __init__(self, modules: tuple[str, ...]) -> None:
        self.modules = frozenset(modules)

    def find_spec(
        self, fullname: str, path: Any = None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if fullname not in self.modules:
            return None
        import importlib.util

        return importlib.util.spec_from_file_location(fullname, _source(fullname))

    def invalidate_caches(self) -> None:
        pass


_status: NativeStatus | None = None


def _built_modules() -> dict[str, str]:
    try:
        with open(_MANIFEST, "rb") as f:
            data = json.load(f)
    except FileNotFoundError:
        return {}
    modules: dict[str, str] = data["modules"]
    return modules


def _built_for_this_python() -> bool:
    """The shared library of the build exists for this interpreter's ABI (a venv made with
    another Python ignores the old extensions and imports the sources)."""
    return any(os.path.exists(os.path.join(_PACKAGE_DIR, "_mypyc__mypyc" + s)) for s in EXTENSION_SUFFIXES)


def _changed(built: dict[str, str]) -> list[str]:
    """The modules whose source differs from what was compiled (sha256; about 1 ms for 35)."""
    changed = []
    for module, digest in built.items():
        try:
            with open(_source(module), "rb") as f:
                now = hashlib.sha256(f.read()).hexdigest()
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
    if not _built_for_this_python():
        reason = f"not compiled for this Python ({sys.version.split()[0]})"
    elif os.environ.get(PURE_ENV) == "1":
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
