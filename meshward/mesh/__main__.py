"""``python -m meshward.mesh --state DIR -f MESH.yaml``: the runner behind ``meshward up --detach``.

Runs in the foreground of its own session (``up --detach`` starts it with its output in
``<state>/mesh/up.log``); without loading every CLI command first.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from meshward.cli.commands.up import run_foreground
from meshward.cli.errors import CliError


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m meshward.mesh")
    parser.add_argument("--state", type=Path, required=True)
    parser.add_argument("-f", "--filename", type=Path, required=True)
    args = parser.parse_args()
    try:
        return run_foreground(args.state, args.filename, announce=False)
    except (CliError, OSError) as exc:
        print(f"meshward up: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
