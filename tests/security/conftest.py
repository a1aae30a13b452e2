"""One recording app behind one sidecar pair for the data-plane attack tests (default settings).

Policies: request+response DLP (mask PII, block secrets), DENY on ``/admin/*``, on the model
``denied-model`` and on the ``admin`` AI operation, one request a minute for the model
``limited-model``; everything else allowed.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.security.attack import Recorder, recorder
from tests.support.sidecar import MeshPair, mesh_pair


def _deny(name: str, operation: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "security.istio.io/v1",
        "kind": "AuthorizationPolicy",
        "metadata": {"name": name, "namespace": "llm"},
        "spec": {"action": "DENY", "rules": [{"to": [{"operation": operation}]}]},
    }


def _dlp(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "meshward.dev/v1alpha1",
        "kind": "DataProtectionPolicy",
        "metadata": {"name": name, "namespace": "llm"},
        "spec": spec,
    }


POLICIES = [
    _deny("no-admin-path", {"paths": ["/admin/*"]}),
    _deny("no-denied-model", {"models": ["denied-model"]}),
    _deny("no-admin-ops", {"aiOperations": ["admin"]}),
    _dlp("pii", action="mask", detectors=["email", "credit_card"]),
    _dlp("secrets", action="block", detectors=["secrets"]),
    {
        "apiVersion": "meshward.dev/v1alpha1",
        "kind": "RateLimitPolicy",
        "metadata": {"name": "budget", "namespace": "llm"},
        "spec": {
            "selector": {"matchLabels": {"app": "chat"}},
            "backend": "local",
            "limits": [
                {
                    "name": "limited",
                    "match": {"models": ["limited-model"]},
                    "requests": {"limit": 1, "per": "minute"},
                }
            ],
        },
    },
]


@pytest.fixture(scope="package")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Recorder]:
    with recorder(tmp_path_factory.mktemp("recorder")) as rec:
        yield rec


@pytest.fixture(scope="package")
def pair(app: Recorder, tmp_path_factory: pytest.TempPathFactory) -> Iterator[MeshPair]:
    tmp: Path = tmp_path_factory.mktemp("security-mesh")
    with mesh_pair(tmp, app.port, server_policies=POLICIES, default_policy="allow") as p:
        yield p
