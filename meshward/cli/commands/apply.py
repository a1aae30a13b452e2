"""``meshward apply -f FILE [--dry-run] [--wait]``: validate the whole file, then store it as a
generation.

A file with any problem is refused as a whole: every problem is printed as
``FILE:LINE: Kind ns/name: field.path: message`` and the running config is untouched. An accepted
file's resources are analyzed (:mod:`meshward.analysis`) and the warnings printed. ``--wait``
returns once every registered sidecar has acknowledged (ACK) or rejected (NACK) the generation,
a rejection explained in terms of the resource that caused it (exit 1); without it, the
generation is stored but not yet confirmed.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from meshward.cli.errors import CliError

if TYPE_CHECKING:
    from meshward.identity.state import MeshState

__all__ = ["print_changes", "register", "wait_for_sidecars"]


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    p = sub.add_parser(
        "apply",
        parents=[common],
        help="validate and apply resources as a new generation",
        description="Validate every document of FILE; if all are valid, store them as a new generation.",
    )
    p.add_argument("-f", "--filename", required=True, type=Path, help="YAML file ('-' for stdin)")
    p.add_argument("--dry-run", action="store_true", help="show what would change; change nothing")
    p.add_argument("--wait", action="store_true", help="wait until every sidecar has ACKed or NACKed")
    p.add_argument(
        "--timeout",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="--wait at most this long (%(default)s)",
    )
    p.set_defaults(func=apply)


def print_changes(result: dict[str, Any], dry_run: bool = False) -> None:
    suffix = " (dry run)" if dry_run else ""
    for c in result.get("changes", []):
        print(f"{c['kind'].lower()} {c['namespace']}/{c['name']} {c['action']}{suffix}")
        if dry_run and c.get("diff"):
            sys.stdout.write(c["diff"])


def apply(args: argparse.Namespace) -> int:
    from meshward.control.operations import ConfigError, config_access
    from meshward.identity.state import MeshState

    if str(args.filename) == "-":
        text, filename = sys.stdin.read(), "<stdin>"
    else:
        try:
            text, filename = args.filename.read_text(encoding="utf-8"), str(args.filename)
        except (OSError, UnicodeDecodeError) as exc:
            raise CliError(f"cannot read {args.filename}: {getattr(exc, 'strerror', None) or exc}") from None
    access = config_access(MeshState(args.state))
    try:
        result = access.apply(text, filename, args.dry_run)
    except ConfigError as exc:
        for problem in exc.problems[1:]:
            print(f"meshward: {problem}", file=sys.stderr)
        raise CliError(exc.problems[0] if exc.problems else str(exc)) from None
    print_changes(result, args.dry_run)
    _warn(args.state, text, filename)
    if args.dry_run:
        print(f"dry run: generation {result['generation']} unchanged", file=sys.stderr)
        return 0
    if result.get("changed"):
        print(f"generation {result['generation']} applied", file=sys.stderr)
    else:
        print(f"no change: generation {result['generation']} stays current", file=sys.stderr)
    if not args.wait:
        if result.get("changed") and not access.where.startswith("https://"):
            print("no control plane runs: sidecars get it when the mesh starts", file=sys.stderr)
        elif result.get("changed"):
            print(
                "not confirmed yet: sidecars acknowledge it in a moment (`meshward apply --wait` waits, "
                "`meshward status` shows each sidecar's ACK/NACK)",
                file=sys.stderr,
            )
        return 0
    return wait_for_sidecars(MeshState(args.state), int(result["generation"]), args.timeout)


def _warn(state_dir: Path, text: str, filename: str) -> None:
    """Print the analysis warnings about the applied resources (never fails the apply)."""
    from meshward.cli.commands.analyze import current_resources, warn_about
    from meshward.identity.state import MeshState
    from meshward.resources.loader import load_text

    try:
        applied = load_text(text, filename)
        merged = {r.key: r for r in current_resources(MeshState(state_dir))} | {r.key: r for r in applied}
        lines = warn_about(list(merged.values()), {r.key for r in applied})
    except Exception:  # analysis is advice: a failure here must not turn an apply into an error
        return
    for line in lines:
        print(f"meshward: {line}", file=sys.stderr)


def wait_for_sidecars(state: MeshState, generation: int, timeout: float) -> int:
    """Until every registered sidecar has ACKed or NACKed ``generation`` (or a later one)."""
    from meshward.control.client import ControlRefused, ControlUnavailable, operator_client

    client = operator_client(state)
    if client is None:
        print("no control plane runs: sidecars get the generation when the mesh starts", file=sys.stderr)
        return 0
    deadline = time.monotonic() + timeout
    with client:
        while True:
            try:
                sidecars = client.request("GET", "/v1/status")[1]["sidecars"]
            except (ControlUnavailable, ControlRefused) as exc:
                raise CliError(f"--wait: {exc}") from None
            pending = [s for s in sidecars if s["ack"] is None or s["ack"]["generation"] < generation]
            if not pending:
                break
            if time.monotonic() >= deadline:
                names = ", ".join(s["sidecar"] for s in pending)
                raise CliError(f"--wait: after {timeout:.0f}s still not confirmed by {names}")
            time.sleep(0.1)
    rejected = [s for s in sidecars if s["ack"]["status"] == "NACK"]
    for s in sidecars:
        ack = s["ack"]
        if ack["status"] == "ACK":
            print(f"sidecar {s['sidecar']}: ACK generation {ack['generation']}", file=sys.stderr)
        else:
            print(
                f"sidecar {s['sidecar']}: REJECTED generation {ack['generation']} "
                f"(it keeps enforcing its previous config): {_reason(ack['reason'])}",
                file=sys.stderr,
            )
    return 1 if rejected else 0


def _reason(text: str) -> str:
    """A NACK reason without the exception class names the sidecar reports it with."""
    for prefix in ("SnapshotRejected: ", "generation "):
        if text.startswith(prefix):
            text = text[len(prefix) :]
    head, sep, rest = text.partition(" rejected: ")
    return rest if sep and head.isdigit() else text
