"""What a sidecar loads: heavy libraries only when its config needs them (RSS per sidecar).

Each case runs in a fresh interpreter (a module imported once stays imported), builds a real
sidecar from a snapshot and lists which heavy top-level packages ended up in ``sys.modules``.
"""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.support.proc import PYTHON, ROOT

HEAVY = ("redis", "phonenumbers", "stdnum", "hyperscan", "yaml")

_SCRIPT = """
import json, sys
from meshward.proxy import Sidecar
from tests.support.sidecar import make_snapshot
policies = json.loads(sys.argv[1])
Sidecar().set_snapshot(make_snapshot("llm/chat", policies=policies, mesh={"defaultPolicy": "allow"}))
print(json.dumps(sorted({m.split(".")[0] for m in sys.modules} & set(json.loads(sys.argv[2])))))
"""


def _rate_limit(backend: str) -> dict[str, object]:
    return {
        "apiVersion": "meshward.dev/v1alpha1",
        "kind": "RateLimitPolicy",
        "metadata": {"name": "rl", "namespace": "llm"},
        "spec": {
            "selector": {"matchLabels": {"app": "chat"}},
            "backend": backend,
            "limits": [{"name": "rps", "key": "", "requests": {"limit": 10, "per": "second"}}],
        },
    }


_DLP = {
    "apiVersion": "meshward.dev/v1alpha1",
    "kind": "DataProtectionPolicy",
    "metadata": {"name": "pii", "namespace": "llm"},
    "spec": {"selector": {"matchLabels": {"app": "chat"}}, "detectors": ["phone", "iban"], "action": "mask"},
}


def loaded(policies: list[dict[str, object]]) -> list[str]:
    out = subprocess.run(
        [PYTHON, "-c", _SCRIPT, json.dumps(policies), json.dumps(HEAVY)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    result: list[str] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


@pytest.mark.parametrize(
    ("policies", "expected"),
    [
        ([], []),
        ([_rate_limit("local")], []),
        ([_rate_limit("redis://127.0.0.1:1/0")], ["redis"]),
        ([_DLP], ["hyperscan", "phonenumbers", "stdnum"]),
    ],
    ids=["no-policy", "local-limit", "redis-limit", "dlp"],
)
def test_heavy_libraries_load_only_for_the_config_that_needs_them(
    policies: list[dict[str, object]], expected: list[str]
) -> None:
    assert loaded(policies) == expected
