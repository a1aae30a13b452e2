"""Encoded slashes with ``pathNormalization: {encodedSlashes: decode}`` (issue 12: 3), and
``meshward check`` normalizing the same way as the sidecar in both modes.

With ``decode`` the mesh decides on - and forwards - the path a decoding server routes:
``/admin%2Fusers`` is ``/admin/users`` for the DENY rule and for the app alike.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from meshward.cli.main import main
from tests.authz.cases import documents
from tests.security.attack import Recorder, denials
from tests.security.conftest import POLICIES
from tests.support.sidecar import MeshPair, mesh_pair

DECODE = {"pathNormalization": {"encodedSlashes": "decode"}}


@pytest.fixture(scope="module")
def decoding_pair(app: Recorder, tmp_path_factory: pytest.TempPathFactory) -> Iterator[MeshPair]:
    tmp = tmp_path_factory.mktemp("decode-mesh")
    with mesh_pair(
        tmp, app.port, server_policies=POLICIES, default_policy="allow", mesh_settings=DECODE
    ) as p:
        yield p


def _get(pair: MeshPair, raw_path: str) -> httpx.Response:
    url = httpx.URL(f"{pair.service_url}/").copy_with(raw_path=raw_path.encode())
    with pair.http_client(timeout=20) as client:
        return client.get(url)


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("path", "policy"),
    [
        ("/admin%2Fusers", "llm/no-admin-path"),
        ("/public/..%5C..%5Cadmin/users", "llm/no-admin-path"),
        ("/v2/repository%2Fmodels%2Ffraud%2Fload", "llm/no-admin-ops"),  # classified admin, as routed
    ],
)
def test_decoded_slashes_meet_the_rules_the_app_route_would(
    decoding_pair: MeshPair, app: Recorder, path: str, policy: str
) -> None:
    before = denials(decoding_pair, policy)
    r = _get(decoding_pair, f"{path}?t=dec-{abs(hash(path))}")
    assert r.status_code == 403, r.text
    assert denials(decoding_pair, policy) == before + 1
    assert app.records(f"dec-{abs(hash(path))}") == []


@pytest.mark.e2e
def test_an_allowed_decoded_path_is_forwarded_decoded(decoding_pair: MeshPair, app: Recorder) -> None:
    r = _get(decoding_pair, "/public%2Fdocs/./x?t=dec-fwd")
    assert r.status_code == 200, r.text
    [record] = app.records("dec-fwd")
    assert record["target"] == "/public/docs/x?t=dec-fwd"  # what authz saw is what the app got


def _check(
    tmp_path: Path, path: str, mesh_spec: dict[str, object], capsys: pytest.CaptureFixture[str]
) -> dict[str, object]:
    docs = documents(POLICIES, "allow")
    docs[0]["spec"].update(mesh_spec)
    file = tmp_path / "mesh.yaml"
    file.write_text(yaml.safe_dump_all(docs))
    argv = ["check", "--state", str(tmp_path / "no-mesh"), "-f", str(file), "--from", "web/webapp"]
    code = main([*argv, "--to", "chat.llm", "--method", "GET", "--path", path, "--json"])
    report: dict[str, object] = json.loads(capsys.readouterr().out)
    report["exit"] = code
    return report


def test_check_refuses_encoded_slashes_like_the_sidecar(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report = _check(tmp_path, "/admin%2Fusers", {}, capsys)
    assert report["decision"] == "reject" and "400" in str(report["reason"])
    report = _check(tmp_path, "/admin%2Fusers", DECODE, capsys)
    assert report["normalized_path"] == "/admin/users" and report["allowed"] is False
