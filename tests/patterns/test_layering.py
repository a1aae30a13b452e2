"""The resource model validates with :mod:`meshward.patterns`, never with the policy engines."""

from __future__ import annotations

import subprocess
import sys


def test_resources_import_no_policy_engine() -> None:
    code = (
        "import sys, meshward.resources, meshward.resources.loader\n"
        "bad = sorted(m for m in sys.modules if m.startswith(('meshward.authz', 'meshward.ratelimit')))\n"
        "print(','.join(bad))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.strip() == ""


def test_patterns_is_a_leaf() -> None:
    code = (
        "import sys, meshward.patterns.strings, meshward.patterns.paths, meshward.patterns.ipblocks,"
        " meshward.patterns.principals, meshward.patterns.timewindow\n"
        "print(','.join(sorted(m for m in sys.modules"
        " if m.startswith('meshward.') and not m.startswith('meshward.patterns'))))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.strip() == ""
