"""Authorization end to end: a real sidecar pair in front of the OpenAI-compatible example
model, driven by the ``openai`` SDK and ``httpx``, and the same calls through ``meshward check``.

client (web/webapp) → client sidecar ─mTLS─▶ server sidecar (llm/chat, authz filter) → model.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from meshward.cli.main import main
from tests.support.models import example_model
from tests.support.sidecar import MeshPair, mesh_pair

pytestmark = [pytest.mark.e2e]

POLICIES: list[dict[str, Any]] = [
    {
        "apiVersion": "security.istio.io/v1",
        "kind": "AuthorizationPolicy",
        "metadata": {"name": "webapp-chat-small", "namespace": "llm"},
        "spec": {
            "selector": {"matchLabels": {"app": "chat"}},
            "rules": [
                {
                    "from": [{"source": {"principals": ["web/webapp"]}}],
                    "to": [
                        {
                            "operation": {
                                "methods": ["POST"],
                                "models": ["chat-small"],
                                "aiOperations": ["chat"],
                            }
                        }
                    ],
                },
                {"to": [{"operation": {"methods": ["GET"], "paths": ["/v1/models", "/v1/models/{*}"]}}]},
            ],
        },
    },
    {
        "apiVersion": "meshward.dev/v1alpha1",
        "kind": "AuthorizationPolicy",
        "metadata": {"name": "no-repository", "namespace": "llm"},
        "spec": {"action": "DENY", "rules": [{"to": [{"operation": {"paths": ["/v2/repository/*"]}}]}]},
    },
    {
        "apiVersion": "security.istio.io/v1beta1",
        "kind": "AuthorizationPolicy",
        "metadata": {
            "name": "would-block-evil",
            "namespace": "llm",
            "annotations": {"istio.io/dry-run": "true"},
        },
        "spec": {
            "action": "DENY",
            "rules": [{"when": [{"key": "request.headers[X-Tenant]", "values": ["evil*"]}]}],
        },
    },
]


@pytest.fixture(scope="module")
def chat_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    with example_model(tmp_path_factory.mktemp("chat"), "examples.models.chat") as port:
        yield port


@pytest.fixture(scope="module")
def pair(chat_app: int, tmp_path_factory: pytest.TempPathFactory) -> Iterator[MeshPair]:
    with mesh_pair(tmp_path_factory.mktemp("authz-pair"), chat_app, POLICIES) as p:  # default deny
        yield p


def _decisions(pair: MeshPair) -> dict[tuple[str, str], float]:
    """The server sidecar's ``meshward_authz_decisions_total`` by (policy, decision)."""
    text = httpx.get(f"{pair.server.admin_url}/stats/prometheus", timeout=10, trust_env=False).text
    return {
        (s.labels["policy"], s.labels["decision"]): s.value
        for family in text_string_to_metric_families(text)
        if family.name == "meshward_authz_decisions"
        for s in family.samples
        if s.name.endswith("_total")
    }


def _counted(pair: MeshPair, before: dict[tuple[str, str], float]) -> set[tuple[str, str]]:
    after = _decisions(pair)
    return {key for key, n in after.items() if n > before.get(key, 0)}


def _check(
    tmp_path: Path,
    method: str,
    path: str,
    model: str | None,
    capsys: pytest.CaptureFixture[str],
    headers: tuple[str, ...] = (),
) -> dict[str, Any]:
    """The same call through ``meshward check`` on an equivalent config."""
    workload = {
        "apiVersion": "meshward.dev/v1alpha1",
        "kind": "Workload",
        "metadata": {"name": "chat", "namespace": "llm", "labels": {"app": "chat"}},
        "spec": {"service": "chat"},
    }
    file = tmp_path / "mesh.yaml"
    file.write_text(yaml.safe_dump_all([workload, *POLICIES]))
    argv = [
        "check",
        "--state",
        str(tmp_path / "none"),
        "-f",
        str(file),
        "--from",
        "web/webapp",
        "--to",
        "chat.llm",
    ]
    argv += ["--method", method, "--path", path, "--json"]
    if model:
        argv += ["--model", model]
    for header in headers:
        argv += ["--header", header]
    main(argv)
    report: dict[str, Any] = json.loads(capsys.readouterr().out)
    return report


def test_allowed_model_through_the_openai_sdk(
    pair: MeshPair, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = _decisions(pair)
    done = pair.openai_client().chat.completions.create(
        model="chat-small", messages=[{"role": "user", "content": "hi"}]
    )
    assert done.choices[0].message.content
    assert _counted(pair, before) == {
        ("llm/webapp-chat-small", "allowed"),
        ("llm/webapp-chat-small", "dry_run_allowed"),
    }
    assert _check(tmp_path, "POST", "/v1/chat/completions", "chat-small", capsys)["allowed"] is True


def test_other_model_is_denied_with_403(
    pair: MeshPair, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(openai.PermissionDeniedError) as info:
        pair.openai_client().chat.completions.create(
            model="chat-large", messages=[{"role": "user", "content": "hi"}]
        )
    body = info.value.response.json()
    error = body["error"]  # OpenAI's error shape: the SDK's str(err) says why
    assert error["type"] == "permission_error" and error["code"] == "access_denied" and body["request_id"]
    assert "no ALLOW policy matched" in str(info.value) and body["request_id"] in str(info.value)
    report = _check(tmp_path, "POST", "/v1/chat/completions", "chat-large", capsys)
    assert report["allowed"] is False and report["workloads"][0]["reason"] == "no ALLOW policy matched"


def test_metadata_allowed_by_the_second_rule(
    pair: MeshPair, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    r = httpx.get(f"{pair.service_url}/v1/models", proxy=pair.proxy_url, timeout=10, trust_env=False)
    assert r.status_code == 200, r.text
    assert _check(tmp_path, "GET", "/v1/models", None, capsys)["workloads"][0]["rule"] == 1


DENIED_BY_DENY = "denied by llm/no-repository rules[0]"


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("/v1/models/%2e%2e/%2e%2e/v2/repository/index", DENIED_BY_DENY),
        ("//v2//repository/index", DENIED_BY_DENY),
        ("/v1/models/x/../../../v2/./repository/index", DENIED_BY_DENY),
        # encoded slashes are refused with 400 (tests/security/test_dataplane_paths.py)
    ],
)
def test_normalization_tricks_do_not_bypass_the_deny(
    pair: MeshPair, path: str, reason: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = httpx.URL(f"{pair.service_url}/").copy_with(raw_path=path.encode())
    before = _decisions(pair)
    r = httpx.get(url, proxy=pair.proxy_url, timeout=10, trust_env=False)
    assert r.status_code == 403, r.text
    error = r.json()["error"]  # OpenAI-style routes: {"error": {"message": ...}}; OIP v2: {"error": "..."}
    assert (error["message"] if isinstance(error, dict) else error).startswith("access denied")
    deciding = "llm/no-repository" if reason == DENIED_BY_DENY else "-"
    assert _counted(pair, before) == {(deciding, "denied"), (deciding, "dry_run_denied")}
    report = _check(tmp_path, "GET", path, None, capsys)
    assert report["allowed"] is False
    assert report["workloads"][0]["reason"] == reason


def test_dry_run_deny_is_counted_not_enforced(
    pair: MeshPair, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = _decisions(pair)
    r = httpx.get(
        f"{pair.service_url}/v1/models",
        headers={"x-tenant": "evil-corp"},
        proxy=pair.proxy_url,
        timeout=10,
        trust_env=False,
    )
    assert r.status_code == 200, r.text
    assert _counted(pair, before) == {
        ("llm/webapp-chat-small", "allowed"),
        ("llm/would-block-evil", "dry_run_denied"),
    }
