"""Imports this refactoring removed stay removed (module level and inside functions alike).

The package-wide contract is import-linter's; these pin the edges issue 13 cut here: the resource
model validates with :mod:`meshward.patterns` (never a policy engine), ``patterns`` is a leaf,
rate limits do not import the authorization engine, and nothing below the command line
(the dashboard, the mesh runner) imports it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "meshward"


def imported(package: str) -> set[str]:
    """Every ``meshward.*`` module named by an import anywhere in ``package``'s source."""
    names: set[str] = set()
    for path in (PACKAGE / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module)
    return {n for n in names if n == "meshward" or n.startswith("meshward.")}


@pytest.mark.parametrize(
    ("package", "allowed"),
    [
        ("patterns", ("meshward.patterns",)),
        ("resources", ("meshward.resources", "meshward.patterns", "meshward.identity", "meshward.dlp")),
    ],
)
def test_low_packages_import_only_what_is_below_them(package: str, allowed: tuple[str, ...]) -> None:
    assert {n for n in imported(package) if not n.startswith(allowed)} == set()


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [
        ("ratelimit", "meshward.authz"),
        ("dashboard", "meshward.cli"),
        ("mesh", "meshward.cli"),
    ],
)
def test_cut_edges_stay_cut(package: str, forbidden: str) -> None:
    assert sorted(n for n in imported(package) if n.startswith(forbidden)) == []
