"""What ``discover`` and ``review`` share on the command line: the window, signing, output,
export and verification of a report (the analysis itself stays in the pure modules).

Options (added by :func:`add_report_options`)::

    --since 30d  --until ISO8601      the window (default: the last 30 days up to now)
    --json | --format table|md|html   how to print it (JSON reports embed their signature)
    -o/--out FILE                     write to FILE instead of stdout
    --signature FILE                  also write a detached signature of the printed bytes
    --export [SINK]                   send the findings to the Mesh's audit sinks (or one)
    --verify FILE [--signature SIG]   check a report instead of making one

Same data and the same ``--until``: byte-identical output.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from meshward.cli.args import duration_arg
from meshward.cli.errors import CliError

if TYPE_CHECKING:
    from meshward.resources.mesh import AuditSink
    from meshward.review.data import MeshData, Window

__all__ = ["add_report_options", "load", "publish", "verify"]


def add_report_options(p: argparse.ArgumentParser, *, since_default: str = "30d") -> None:
    p.add_argument("--since", default=since_default, help="window length, e.g. 1h, 7d (default: %(default)s)")
    p.add_argument("--until", metavar="ISO8601", help="end of the window (default: now)")
    p.add_argument("--json", action="store_true", help="print JSON (signed when the checkpoint key is here)")
    p.add_argument(
        "--format", choices=("table", "md", "html"), default="table", help="text format (default: table)"
    )
    p.add_argument("-o", "--out", type=Path, metavar="FILE", help="write the report to FILE")
    p.add_argument(
        "--signature", type=Path, metavar="FILE", help="detached signature file (write; with --verify: read)"
    )
    p.add_argument(
        "--export",
        nargs="?",
        const="*",
        metavar="SINK",
        help="send findings to the Mesh's audit sinks (or SINK)",
    )
    p.add_argument("--verify", type=Path, metavar="FILE", help="verify a report made by this mesh, then exit")


def _until_ms(text: str | None) -> int:
    if text is None:
        return int(time.time() * 1000)
    try:
        moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise CliError(f"--until {text!r}: expected ISO 8601, e.g. 2026-12-01T03:00:00Z") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return int(moment.timestamp() * 1000)


def load(args: argparse.Namespace) -> tuple[MeshData, Window]:
    from meshward.identity.state import MeshStateError
    from meshward.review.data import Window
    from meshward.review.sources import load_mesh_data

    span = duration_arg(args.since, "--since")
    end = _until_ms(args.until)
    try:
        data = load_mesh_data(args.state)
    except (MeshStateError, OSError) as exc:
        raise CliError(f"cannot read the mesh in {args.state}: {exc}") from None
    return data, Window(end - int(span.total_seconds() * 1000), end)


def publish(args: argparse.Namespace, make: Callable[[MeshData, Window], dict[str, Any]]) -> int:
    """Make the report, print or write it, sign and export as asked."""
    from meshward.review.render import render
    from meshward.review.signing import ReportSigner, SignatureError

    if args.verify is not None:
        return verify(args)
    data, window = load(args)
    sinks = _sinks(args, data) if args.export is not None else []
    doc = make(data, window)
    signer: ReportSigner | None
    try:
        signer = ReportSigner(args.state)
    except SignatureError as exc:
        if args.signature is not None:
            raise CliError(str(exc)) from None
        signer = None
    if args.json:
        if signer is not None:
            doc = signer.sign_report(doc)
        text = json.dumps(doc, indent=2, sort_keys=True) + "\n"
    else:
        text = render(doc, args.format)
    data_bytes = text.encode()
    if args.out is not None:
        _write(args.out, data_bytes)
    else:
        sys.stdout.write(text)
    if args.signature is not None and signer is not None:
        _write(args.signature, (signer.sign_bytes(data_bytes) + "\n").encode())
    if sinks:
        _export(sinks, doc, window)
    return 0


def _write(path: Path, data: bytes) -> None:
    try:
        path.write_bytes(data)
    except OSError as exc:
        raise CliError(f"cannot write {path}: {exc.strerror or exc}") from None


def _sinks(args: argparse.Namespace, data: MeshData) -> list[AuditSink]:
    """The sinks ``--export`` names (checked before any output is written)."""
    sinks = [s for s in data.mesh.audit.sinks if args.export in ("*", s.name)]
    if not sinks:
        known = ", ".join(s.name for s in data.mesh.audit.sinks) or "none"
        raise CliError(f"--export: no audit sink {args.export!r} in the Mesh resource (sinks: {known})")
    return sinks


def _export(sinks: list[AuditSink], doc: dict[str, Any], window: Window) -> None:
    from meshward.review.export import export_findings

    try:
        sent = export_findings(doc, sinks, window.end_ms)
    except (OSError, ConnectionError, TimeoutError) as exc:
        raise CliError(f"--export: delivery failed: {exc}") from None
    print(f"exported {sent} finding(s) to {', '.join(s.name for s in sinks)}", file=sys.stderr)


def verify(args: argparse.Namespace) -> int:
    """``--verify FILE``: a JSON report's embedded signature, or any file's detached one."""
    from meshward.review.signing import SignatureError, public_key, verify_bytes, verify_report

    try:
        content = args.verify.read_bytes()
    except OSError as exc:
        raise CliError(f"cannot read {args.verify}: {exc.strerror or exc}") from None
    try:
        key = public_key(args.state)
        if args.signature is not None:
            try:
                signature = args.signature.read_text()
            except OSError as exc:
                raise CliError(f"cannot read {args.signature}: {exc.strerror or exc}") from None
            verify_bytes(content, signature, key)
        else:
            try:
                doc = json.loads(content)
            except ValueError:
                raise SignatureError(
                    "not a JSON report: give its detached signature with --signature"
                ) from None
            if not isinstance(doc, dict):
                raise SignatureError("not a JSON report")
            verify_report(doc, key)
    except SignatureError as exc:
        raise CliError(f"{args.verify}: {exc}") from None
    print(f"{args.verify}: signature OK (audit checkpoint key)")
    return 0
