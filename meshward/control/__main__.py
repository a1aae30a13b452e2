"""``python -m meshward.control --state DIR [--listen HOST:PORT]``: the control plane alone.

The same as ``meshward control``, without loading every CLI command first (``meshward up``
starts the control plane this way, so it is serving sooner).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from meshward.control.main import ControlStartError, serve_forever
from meshward.control.server import DEFAULT_LISTEN


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m meshward.control")
    parser.add_argument("--state", type=Path, default=Path(os.environ.get("MESHWARD_STATE") or "./.meshward"))
    parser.add_argument("--listen", default=f"{DEFAULT_LISTEN[0]}:{DEFAULT_LISTEN[1]}")
    try:
        args = parser.parse_args()
        return serve_forever(args.state, args.listen)
    except (ControlStartError, OSError) as exc:
        print(f"meshward control: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
