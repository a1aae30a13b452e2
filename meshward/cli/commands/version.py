"""``meshward version [--json]``: the version, the Python, and whether the hot path is compiled.

``compiled`` is true when the mypyc-built modules run (see :mod:`meshward.native`); false under
``MESHWARD_PURE=1``, after a compiled source changed without a rebuild, or in a pure install.
"""

from __future__ import annotations

import argparse
import json
import platform

__all__ = ["register"]


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    p = sub.add_parser(
        "version",
        parents=[common],
        help="show the version and whether the hot path runs compiled (mypyc) or as pure Python",
        description="Print meshward's version, the Python running it, and compiled: true/false.",
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=version)


def version(args: argparse.Namespace) -> int:
    from meshward import __version__
    from meshward.native import status

    native = status()
    info = {"version": __version__, "python": platform.python_version(), **native.as_dict()}
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        print(f"meshward {__version__} (Python {info['python']})")
        print(f"compiled: {str(native.compiled).lower()} ({native.reason})")
    return 0
