"""``meshward audit verify | tail [-f] | export --format ocsf|cef|syslog``.

Reads the control plane's audit store in ``<state>/audit`` directly (files, no API): verify
works on a copy handed to an auditor, and on a trail whose control plane is down.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from meshward.cli.args import show_usage
from meshward.cli.errors import CliError

if TYPE_CHECKING:
    from meshward.audit.chain import AuditRecord

    Entry = tuple[str, str, AuditRecord]  # (source, chain, record)

__all__ = ["FORMATS", "register"]

#: ``meshward.audit.formats.FORMATS`` (a test keeps them equal): the parser is built without
#: importing the audit package.
FORMATS = ("ocsf", "cef", "syslog")


def _renderers() -> dict[str, Callable[[AuditRecord, str, str], str]]:
    from meshward.audit.formats import to_cef, to_ocsf_json, to_syslog

    return {"ocsf": to_ocsf_json, "cef": to_cef, "syslog": to_syslog}


def _audit_dir(args: argparse.Namespace) -> Path:
    path = Path(args.state) / "audit"
    if not (path / "trail").is_dir():
        raise CliError(f"no audit trail in {path} (has this control plane received any audit records?)")
    return path


def _chains(audit_dir: Path) -> dict[str, tuple[str, str]]:
    from meshward.audit.trail import read_index

    index = read_index(audit_dir / "trail")
    return {slug: (meta.get("source", "?"), meta.get("chain", "?")) for slug, meta in index.items()}


def _all_entries(audit_dir: Path) -> list[Entry]:
    from meshward.audit.trail import iter_trail

    entries: list[Entry] = []
    for slug, (source, chain) in sorted(_chains(audit_dir).items()):
        entries.extend((source, chain, r) for r in iter_trail(audit_dir / "trail" / f"{slug}.jsonl"))
    entries.sort(key=lambda e: (int(e[2].event.get("time") or 0), e[0], e[2].seq))
    return entries


def _text(record: AuditRecord, source: str, chain: str) -> str:
    from meshward.audit.ocsf import enrich

    e = enrich(record.event)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(int(e.get("time") or 0) / 1000))
    what = f"{e.get('class_name', '?')}/{e.get('activity_name', '?')}"
    req = e.get("http_request") or {}
    detail = ""
    if req:
        authz = (e.get("authorizations") or [{}])[0]
        policy = (authz.get("policy") or {}).get("name")
        # A decision no policy made (default deny, no ALLOW matched) says so instead of a name.
        decided_by = f"policy={policy}" if policy else f"reason={authz.get('reason') or '-'!r}"
        actor = ((e.get("actor") or {}).get("user") or {}).get("uid") or "-"
        code = (e.get("http_response") or {}).get("code", "-")
        detail = (
            f"{actor} {req.get('http_method')} {(req.get('url') or {}).get('path')} -> {code} "
            f"{authz.get('decision', '-')} {decided_by} request_id={(e.get('metadata') or {}).get('uid') or '-'}"
        )
    elif e.get("api"):
        detail = f"{e['api'].get('operation')} {e.get('status', '')} {e.get('message', '')}".strip()
    elif e.get("app"):
        detail = f"{e['app'].get('name')} {e['app'].get('uid', '')}"
    return f"{stamp} {source} #{record.seq} {what} {detail}".rstrip()


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    p = sub.add_parser(
        "audit",
        parents=[common],
        help="verify, follow and export the audit trail",
        description="The tamper-evident audit trail: verify its chains, tail (and filter) its records, export them.",
    )

    p.set_defaults(func=show_usage(p))
    asub = p.add_subparsers(dest="audit_command", metavar="SUBCOMMAND")
    hidden_state = {"type": Path, "default": argparse.SUPPRESS, "help": argparse.SUPPRESS}

    v = asub.add_parser("verify", help="check every chain and signed checkpoint; name any tampering")
    v.add_argument("--state", **hidden_state)  # type: ignore[arg-type]
    v.add_argument("--json", action="store_true", help="print the report as JSON")
    v.add_argument(
        "--key",
        type=Path,
        help="the checkpoint public key you trust (PEM), instead of the trail's own checkpoint.pub",
    )
    v.set_defaults(func=verify)

    t = asub.add_parser("tail", help="print the latest records; -f follows new ones")
    t.add_argument("--state", **hidden_state)  # type: ignore[arg-type]
    t.add_argument(
        "-n", "--lines", type=int, default=20, help="how many to print first (default: %(default)s)"
    )
    t.add_argument("-f", "--follow", action="store_true", help="keep printing records as they arrive")
    t.add_argument("--format", choices=("text", *FORMATS), default="text")
    t.add_argument(
        "--identity", metavar="ID", help="only requests from this caller (NS/SA, principal, SPIFFE ID)"
    )
    t.add_argument("--decision", choices=("allow", "deny", "dry_run_deny"), help="only requests so decided")
    t.add_argument("--request-id", metavar="ID", help="only the request with this id (its x-request-id)")
    t.set_defaults(func=tail)

    e = asub.add_parser("export", help="print every record in a SIEM format")
    e.add_argument("--state", **hidden_state)  # type: ignore[arg-type]
    e.add_argument("--format", choices=FORMATS, required=True)
    e.add_argument("--out", type=Path, help="write to this file instead of stdout")
    e.set_defaults(func=export)


def verify(args: argparse.Namespace) -> int:
    from meshward.audit.verify import verify_audit_dir

    if args.key is not None and not args.key.is_file():
        raise CliError(f"--key: cannot read {args.key}: No such file or directory")
    report = verify_audit_dir(_audit_dir(args), args.key)
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
    else:
        for problem in report.problems:
            print(f"TAMPERED {problem}")
        status = "OK" if report.ok else f"FAILED: {len(report.problems)} problem(s)"
        print(
            f"audit trail {status}: {report.records} records in {report.chains} chains, "
            f"{report.checkpoints} signed checkpoints (key {report.key_fingerprint or 'none'})"
        )
    return 0 if report.ok else 1


def _render(fmt: str) -> Callable[[AuditRecord, str, str], str]:
    return _text if fmt == "text" else _renderers()[fmt]


def _follow(audit_dir: Path, seen: dict[str, int], interval: float = 0.5) -> Iterator[Entry]:
    """New records as they are stored; reads only what was appended since the last poll."""
    from meshward.audit.chain import RecordError, parse_record_line

    offsets: dict[str, int] = {}
    while True:
        fresh: list[Entry] = []
        for slug, (source, chain) in _chains(audit_dir).items():
            path = audit_dir / "trail" / f"{slug}.jsonl"
            try:
                fh = open(path, "rb")  # noqa: SIM115 - closed by the with below
            except FileNotFoundError:
                continue
            with fh:
                fh.seek(offsets.get(slug, 0))
                for line in fh:
                    if not line.endswith(b"\n"):
                        break  # being written: read it next time
                    offsets[slug] = offsets.get(slug, 0) + len(line)
                    try:
                        record = parse_record_line(line, check_hash=False)
                    except RecordError:
                        continue
                    if record.seq > seen.get(slug, 0):
                        fresh.append((source, chain, record))
                        seen[slug] = record.seq
        fresh.sort(key=lambda e: int(e[2].event.get("time") or 0))
        yield from fresh
        time.sleep(interval)


def _matcher(args: argparse.Namespace) -> Callable[[AuditRecord], bool]:
    """The ``tail`` filters (--identity, --decision, --request-id) as one predicate."""
    identity: str | None = None
    if args.identity:
        from meshward.identity.spiffe import InvalidSpiffeId, parse_identity
        from meshward.identity.state import MeshState

        try:
            identity = parse_identity(args.identity, MeshState(args.state).trust_domain).uri
        except (InvalidSpiffeId, OSError) as exc:
            raise CliError(f"--identity {args.identity!r}: {exc}") from None

    def matches(record: AuditRecord) -> bool:
        e = record.event
        if identity is not None and ((e.get("actor") or {}).get("user") or {}).get("uid") != identity:
            return False
        if args.decision and (e.get("authorizations") or [{}])[0].get("decision") != args.decision:
            return False
        return not args.request_id or (e.get("metadata") or {}).get("uid") == args.request_id

    return matches


def tail(args: argparse.Namespace) -> int:
    audit_dir = _audit_dir(args)
    render = _render(args.format)
    wanted = _matcher(args)
    entries = [e for e in _all_entries(audit_dir) if wanted(e[2])]
    for source, chain, record in entries[-max(0, args.lines) :] if args.lines else []:
        print(render(record, source, chain), flush=True)
    if not args.follow:
        return 0
    seen: dict[str, int] = {}
    by_source_chain = {v: k for k, v in _chains(audit_dir).items()}
    for source, chain, record in entries:
        slug = by_source_chain.get((source, chain))
        if slug:
            seen[slug] = max(seen.get(slug, 0), record.seq)
    for source, chain, record in _follow(audit_dir, seen):
        if wanted(record):
            print(render(record, source, chain), flush=True)
    return 0


def export(args: argparse.Namespace) -> int:
    render = _renderers()[args.format]
    lines = (render(record, source, chain) + "\n" for source, chain, record in _all_entries(_audit_dir(args)))
    if args.out:
        with open(args.out, "w") as fh:
            fh.writelines(lines)
    else:
        sys.stdout.writelines(lines)
    return 0
