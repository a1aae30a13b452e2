"""The shipped Grafana dashboard queries only metrics that Meshward's sidecars export."""

from __future__ import annotations

import json
import re
from pathlib import Path

from tests.support.proc import ROOT

DASHBOARD = ROOT / "docs" / "grafana" / "meshward-dashboard.json"
EXPORTERS = [
    ROOT / "meshward" / "telemetry" / "metrics.py",
    ROOT / "meshward" / "ratelimit" / "telemetry.py",
    ROOT / "meshward" / "proxy" / "stats.py",
]
_SUFFIXES = ("_total", "_bucket", "_sum", "_count")


def _exported() -> set[str]:
    names: set[str] = set()
    for path in EXPORTERS:
        names |= set(re.findall(r'"((?:meshward|gen_ai)_[a-z_]+)"', path.read_text()))
    return names


def test_every_queried_metric_is_exported() -> None:
    doc = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in doc["panels"] for t in p["targets"]]
    assert len(exprs) >= 10
    exported = _exported()
    for expr in exprs:
        for name in re.findall(r"\b((?:meshward|gen_ai)_[a-z_]+)\b", expr):
            base = name
            for suffix in _SUFFIXES:
                if base.endswith(suffix) and base.removesuffix(suffix) in exported:
                    base = base.removesuffix(suffix)
                    break
            assert base in exported, (
                f"{name} (in {expr!r}) is not exported by {[str(Path(p).name) for p in EXPORTERS]}"
            )


def test_panels_have_unique_ids_and_a_datasource_variable() -> None:
    doc = json.loads(DASHBOARD.read_text())
    ids = [p["id"] for p in doc["panels"]]
    assert len(ids) == len(set(ids))
    assert any(v["name"] == "datasource" for v in doc["templating"]["list"])
