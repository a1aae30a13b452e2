"""``meshward analyze [-f FILE ...] [--json]``: find mistakes in the config (istioctl analyze).

Analyzes the mesh's current generation with FILEs laid over it (same kind/namespace/name
replaced), or the FILEs alone when there is no mesh in ``--state``. The rules are in
:mod:`meshward.analysis.rules`. Exit status: 0 clean, 1 warnings, 2 errors (a file that does not
load is an error).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from meshward.cli.errors import CliError

if TYPE_CHECKING:
    from meshward.identity.state import MeshState
    from meshward.resources import Resource

__all__ = ["current_resources", "register", "warn_about"]


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    p = sub.add_parser(
        "analyze",
        parents=[common],
        help="find mistakes in the config (selectors, trust domains, methods, dead rules)",
        description="Analyze the current config (with -f FILEs laid over it, or the FILEs alone). "
        "Exit 0 clean, 1 warnings, 2 errors.",
    )
    p.add_argument(
        "-f", "--file", action="append", default=[], type=Path, metavar="FILE", help="resources (YAML)"
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=analyze)


def current_resources(state: MeshState) -> list[Resource[Any]]:
    """Every resource of the mesh's current generation (through the control plane if it runs)."""
    from meshward.control.operations import config_access
    from meshward.resources import KINDS

    access = config_access(state)
    found: list[Resource[Any]] = []
    for kind, model in KINDS.items():
        found.extend(model.model_validate(doc) for doc in access.get(kind, None, None)["items"])
    return found


def warn_about(resources: list[Resource[Any]], only: set[tuple[str, str, str]]) -> list[str]:
    """The analysis findings about the resources ``only`` (their keys), as lines for stderr."""
    from meshward.analysis import analyze as run_rules

    refs = {f"{k} {ns}/{n}" for k, ns, n in only}
    return [str(f) for f in run_rules(resources) if f.resource in refs]


def analyze(args: argparse.Namespace) -> int:
    from meshward.analysis import Finding, exit_code
    from meshward.analysis import analyze as run_rules
    from meshward.control.operations import ConfigError
    from meshward.identity.state import MeshState, MeshStateError
    from meshward.resources.loader import LoadError, load_file

    state = MeshState(args.state)
    overlay: dict[tuple[str, str, str], Resource[Any]] = {}
    if state.exists():
        try:
            overlay = {r.key: r for r in current_resources(state)}
        except (ConfigError, MeshStateError) as exc:
            raise CliError(f"cannot read the mesh's config: {exc}", 2) from None
    elif not args.file:
        raise CliError(f"no mesh in {args.state} and no -f FILE: nothing to analyze", 2)
    findings: list[Finding] = []
    for path in args.file:
        try:
            overlay.update((r.key, r) for r in load_file(path))
        except LoadError as exc:
            findings += [Finding("error", "MW000", str(path), str(p)) for p in exc.problems or [exc]]
    if not findings:
        findings = run_rules(list(overlay.values()))
    if args.json:
        print(json.dumps({"findings": [f.to_json() for f in findings]}, indent=2))
    elif findings:
        for f in findings:
            print(f)
    else:
        print(f"no problems found in {len(overlay)} resources")
    return exit_code(findings)
