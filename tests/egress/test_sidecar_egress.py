"""The sidecar's egress path in process: fail closed without a credential, keys replaced, ports.

The credential source is the sidecar's ``runtime.secret_fetch`` hook (what
``meshward.proxy.runner`` wires to the control plane); here the test plays the control plane's
answers, the e2e test (test_egress_e2e.py) runs the real one.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import uvloop

from meshward.proxy import Sidecar
from tests.egress.provider import FakeProvider
from tests.support.sidecar import issue_svid, make_snapshot


def _policies(port: int, ca: Path) -> list[dict[str, object]]:
    return [
        {
            "apiVersion": "meshward.dev/v1alpha1",
            "kind": "ExternalService",
            "metadata": {"name": "llm-provider", "namespace": "llm"},
            "spec": {
                "hosts": ["api.llm.example"],
                "ports": [{"number": 443, "protocol": "HTTPS"}],
                "addresses": [f"127.0.0.1:{port}"],
                "caBundle": str(ca),
                "protocol": "openai",
                "credential": {"secret": "llm-key", "header": "api-key", "format": "{secret}"},
            },
        },
        {
            "apiVersion": "meshward.dev/v1alpha1",
            "kind": "EgressPolicy",
            "metadata": {"name": "chat", "namespace": "llm"},
            "spec": {"rules": [{"to": [{"hosts": ["api.llm.example"], "paths": ["/v1/chat/*"]}]}]},
        },
    ]


def test_credentials_fail_closed_and_replace_the_apps_keys(tmp_path: Path) -> None:
    svid = issue_svid(tmp_path / "svid", "llm/summarizer")
    body = {"model": "m", "messages": [{"role": "user", "content": "hi there"}]}
    app_keys = {"authorization": "Bearer app-key", "api-key": "app-key", "x-api-key": "app-key"}
    answers: list[str | Exception] = []

    async def fetch(name: str) -> str:
        assert name == "llm-key"
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    async def main(api: FakeProvider) -> None:
        sidecar = Sidecar()
        sidecar.set_identity(svid.cert.read_bytes(), svid.key.read_bytes(), svid.bundle.read_bytes())
        sidecar.set_snapshot(make_snapshot("llm/summarizer", policies=_policies(api.port, api.ca_path)))
        await sidecar.start()
        proxy = "http://{}:{}".format(*sidecar.outbound_address)
        url = "http://api.llm.example/v1/chat/completions"
        try:
            async with httpx.AsyncClient(proxy=proxy, timeout=20, trust_env=False) as c:
                r = await c.post(url, json=body, headers=app_keys)  # no control plane at all
                assert r.status_code == 503 and r.json()["reason"] == "credential_unavailable"
                sidecar.runtime.secret_fetch = fetch
                answers.append(PermissionError("not entitled"))
                r = await c.post(url, json=body, headers=app_keys)  # the control plane says no
                assert r.status_code == 503
                assert api.seen == []
                answers.append("sk-injected")
                r = await c.post(url, json=body, headers=app_keys)
                assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == "hi there"
                r = await c.post("http://api.llm.example:8443/v1/chat/completions", json=body)
                assert r.status_code == 403 and r.json()["reason"] == "port"
                r = await c.post("http://api.llm.example/v1/embeddings", json={"model": "m", "input": "x"})
                assert r.status_code == 403 and r.json()["reason"] == "egress_policy"
        finally:
            await sidecar.stop()

    with FakeProvider(tmp_path / "provider", "api.llm.example") as api:
        uvloop.run(main(api))
        seen = api.seen
    assert len(seen) == 1
    assert seen[0].api_key == "sk-injected" and seen[0].authorization is None  # every app key removed
