"""``meshward tap [--from ID] [--to SERVICE] [--status S] [--decision D] [--json] [--count N] [--timeout S]``.

A live line per request the mesh's sidecars handle (like ``linkerd viz tap``): source identity,
destination, method, path, status, decision and deciding policy, model, tokens, DLP finding
types. Read straight from each running sidecar's admin ``/tap`` stream; metadata only.
Ends after ``--count`` matching requests, after ``--timeout`` seconds, or on Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from meshward.cli.errors import CliError

__all__ = ["register"]


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    p = sub.add_parser(
        "tap",
        parents=[common],
        help="watch requests live, one line each",
        description="Watch the mesh's requests live (metadata only, never bodies), filtered.",
    )
    p.add_argument("--from", dest="source", default="", metavar="ID", help="caller identity (any spelling)")
    p.add_argument(
        "--to", dest="destination", default="", metavar="SERVICE", help="service[.ns] or ns/workload"
    )
    p.add_argument("--status", default="", help="response status, e.g. 403 or 5xx")
    p.add_argument("--decision", default="", help="allow | deny | dry_run_deny")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.add_argument("--count", type=int, default=0, metavar="N", help="stop after N requests")
    p.add_argument("--timeout", type=float, default=0.0, metavar="S", help="stop after S seconds")
    p.set_defaults(func=tap)


def tap(args: argparse.Namespace) -> int:
    from meshward.dashboard.tap import TapFilter, TapRelay, TapWatcher, format_event
    from meshward.dashboard.view import MeshView
    from meshward.identity.state import MeshStateError

    try:
        view = MeshView(args.state)
    except MeshStateError as exc:
        raise CliError(str(exc)) from None
    sidecars = view.sidecars()
    if not sidecars:
        raise CliError(f"no sidecar is running in {args.state} (start the mesh with `meshward up`)")
    relay = TapRelay(view.sidecars)
    watcher = TapWatcher(
        TapFilter(args.source, args.destination, args.status, args.decision, view.trust_domain)
    )
    relay.subscribe(watcher)
    seen = 0
    deadline = time.monotonic() + args.timeout if args.timeout > 0 else None
    try:
        relay.wait_connected(10.0)
        print(f"tapping {len(sidecars)} sidecars (Ctrl-C to stop)", file=sys.stderr, flush=True)
        while deadline is None or time.monotonic() < deadline:
            wait = 1.0 if deadline is None else max(0.0, min(1.0, deadline - time.monotonic()))
            for event in watcher.take(wait):
                print(
                    json.dumps(event, separators=(",", ":")) if args.json else format_event(event), flush=True
                )
                seen += 1
                if args.count and seen >= args.count:
                    return 0
    except KeyboardInterrupt:
        return 0
    finally:
        relay.unsubscribe(watcher)
    return 0
