"""The dashboard, ``meshward tap`` and ``meshward top`` against a real running mesh, with a real
headless Chromium (Debian's ``chromium`` driven by Playwright; never a downloaded browser).

One small mesh for the module: the quickstart's webapp and tiny-model, plus a second caller
(``jobs/batch``, the same webapp code) that no policy allows, and a DENY policy on ``/admin``.
``MESHWARD_SCREENSHOTS=DIR`` also saves a screenshot of every page into DIR (docs/img).
"""

from __future__ import annotations

import http.client
import io
import json
import os
import subprocess
import textwrap
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

import pytest

from meshward.cli.main import main as meshward_main
from tests.mesh.meshctl import Mesh
from tests.support.proc import PYTHON, ROOT, wait_for

pytestmark = pytest.mark.e2e

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
MESH_YAML = textwrap.dedent(
    """\
    apiVersion: meshward.dev/v1alpha1
    kind: Mesh
    metadata: {name: dashboard-test}
    spec: {trustDomain: demo.local, mtls: {mode: STRICT}, defaultPolicy: deny}
    ---
    apiVersion: meshward.dev/v1alpha1
    kind: Workload
    metadata: {name: tiny-model, namespace: ml, labels: {app: tiny-model, version: v1}}
    spec:
      port: 0
      command: ["python", "-m", "examples.quickstart.model", "--port", "{port}"]
      readiness: {httpGet: /health}
    ---
    apiVersion: meshward.dev/v1alpha1
    kind: Workload
    metadata: {name: webapp, namespace: web, labels: {app: webapp}}
    spec:
      port: 0
      command: ["python", "-m", "examples.quickstart.webapp", "--port", "{port}"]
      readiness: {httpGet: /health}
    ---
    apiVersion: meshward.dev/v1alpha1
    kind: Workload
    metadata: {name: batch, namespace: jobs, labels: {app: batch}}
    spec:
      port: 0
      command: ["python", "-m", "examples.quickstart.webapp", "--port", "{port}"]
      readiness: {httpGet: /health}
    ---
    apiVersion: security.istio.io/v1
    kind: AuthorizationPolicy
    metadata: {name: webapp-may-chat, namespace: ml}
    spec:
      selector: {matchLabels: {app: tiny-model}}
      action: ALLOW
      rules:
      - from: [{source: {principals: ["demo.local/ns/web/sa/webapp"]}}]
        to: [{operation: {methods: ["POST", "GET"], paths: ["/v1/chat/completions", "/v1/models"]}}]
    ---
    apiVersion: security.istio.io/v1
    kind: AuthorizationPolicy
    metadata: {name: no-admin, namespace: ml}
    spec:
      selector: {matchLabels: {app: tiny-model}}
      action: DENY
      rules: [{to: [{operation: {paths: ["/admin*"]}}]}]
    """
)
PROBE = ("POST", "/v1/chat/completions")
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class Traffic:
    """Requests into the mesh through its workloads (each a real app → sidecar → mTLS call)."""

    def __init__(self, mesh: Mesh) -> None:
        self.workloads = {w["name"]: w for w in mesh.status()["workloads"]}

    def ask(self, workload: str) -> int:
        """``workload``'s app asks tiny-model (one call on the edge workload → ml/tiny-model)."""
        app = self.workloads[workload]["app"]
        try:
            with _DIRECT.open(f"http://{app}/ask?q=hello", timeout=15) as resp:
                return int(resp.status)
        except urllib.error.HTTPError as exc:
            return exc.code

    def admin_as_webapp(self) -> int:
        """GET /admin on tiny-model with the webapp's identity (its sidecar's outbound proxy)."""
        outbound = self.workloads["webapp"]["outbound"]
        proxied = urllib.request.build_opener(urllib.request.ProxyHandler({"http": f"http://{outbound}"}))
        try:
            with proxied.open("http://tiny-model.ml/admin", timeout=15) as resp:
                return int(resp.status)
        except urllib.error.HTTPError as exc:
            return exc.code


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    base = tmp_path_factory.mktemp("dashboard")
    (base / "mesh.yaml").write_text(MESH_YAML)
    with Mesh(base / "state").detached(base / "mesh.yaml") as m:
        yield m


@pytest.fixture(scope="module")
def traffic(mesh: Mesh) -> Traffic:
    return Traffic(mesh)


@pytest.fixture(scope="module")
def login(mesh: Mesh) -> str:
    """``meshward dashboard --print-url``: its last line is the login URL."""
    out = mesh.cli("dashboard", "--print-url").stdout.strip().splitlines()
    assert out[-1].startswith("http://127.0.0.1:") and "/login?token=" in out[-1]
    return out[-1]


class Browser:
    """Headless Chromium with a logged-in context; every request any context makes is recorded."""

    def __init__(self, chromium: Any) -> None:
        self.chromium = chromium
        self.seen: list[str] = []
        self.context = self.new_context()

    def new_context(self) -> Any:
        context = self.chromium.new_context(viewport={"width": 1280, "height": 820})
        context.on("request", lambda request: self.seen.append(request.url))
        return context

    def new_page(self) -> Any:
        return self.context.new_page()


@pytest.fixture(scope="module")
def browser(mesh: Mesh, login: str) -> Iterator[Browser]:
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium package (see .ci/run)")
    with sync_playwright() as p:
        # A fresh temporary profile (user-data-dir) per launch.
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            b = Browser(chromium)
            first = b.new_page()
            first.goto(login)  # the one-time token, redeemed for the context's session cookie
            assert first.url == _origin(login) + "/graph"
            first.close()
            yield b
        finally:
            chromium.close()


def _origin(url: str) -> str:
    return url.split("/login", 1)[0]


def _page(browser: Any, login_url: str) -> Any:
    """A new tab of the logged-in browser, on the graph."""
    page = browser.new_page()
    page.goto(_origin(login_url) + "/graph")
    return page


def _shot(page: Any, name: str) -> None:
    target = os.environ.get("MESHWARD_SCREENSHOTS")
    if target:
        page.screenshot(path=str(Path(target) / f"dashboard-{name}.png"), full_page=True)


def test_print_url_finds_the_same_dashboard_and_mints_a_new_one_time_token(mesh: Mesh, login: str) -> None:
    again = mesh.cli("dashboard", "--print-url").stdout.strip().splitlines()[-1]
    assert _origin(again) == _origin(login) and again != login
    first = _get(again)  # redeemed for a session cookie
    assert first.status == 303 and first.getheader("Location") == "/graph"
    cookie = first.getheader("Set-Cookie") or ""
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert _get(again).status == 403  # one time only


def _get(url: str) -> http.client.HTTPResponse:
    host, _, rest = url.removeprefix("http://").partition("/")
    conn = http.client.HTTPConnection(host, timeout=10)
    conn.request("GET", "/" + rest)
    resp = conn.getresponse()
    resp.read()
    conn.close()
    return resp


def test_graph_shows_every_workload_and_edge_with_counts(
    mesh: Mesh, traffic: Traffic, browser: Any, login: str
) -> None:
    sent = {"web/webapp": 0, "jobs/batch": 0}
    for _ in range(4):
        assert traffic.ask("webapp") == 200
        sent["web/webapp"] += 1
    for _ in range(2):
        assert traffic.ask("batch") == 403  # no policy allows jobs/batch: denied at the model's sidecar
        sent["jobs/batch"] += 1
    page = _page(browser, login)
    for ref in ("ml/tiny-model", "web/webapp", "jobs/batch"):
        assert page.locator(f'table.nodes tr[data-node="{ref}"]').count() == 1
        assert page.locator(f'#graph [data-node="{ref}"]').count() == 1
    rows = page.locator("table.edges tbody tr[data-edge]")
    edges = {rows.nth(i).get_attribute("data-edge"): rows.nth(i) for i in range(rows.count())}
    assert set(edges) == {"web/webapp -> ml/tiny-model", "jobs/batch -> ml/tiny-model"}
    webapp, batch = edges["web/webapp -> ml/tiny-model"], edges["jobs/batch -> ml/tiny-model"]
    assert webapp.get_attribute("data-requests") == str(sent["web/webapp"])
    assert webapp.get_attribute("data-denied") == "0"
    assert batch.get_attribute("data-requests") == str(sent["jobs/batch"])
    assert batch.get_attribute("data-denied") == str(sent["jobs/batch"])
    page.click('#graph g[data-edge="jobs/batch -> ml/tiny-model"] text')
    detail = page.locator("#detail")
    assert "jobs/batch -> ml/tiny-model" in detail.inner_text()
    assert "denied\n2" in detail.inner_text().replace("\t", "\n")
    page.click('#graph g[data-node="ml/tiny-model"] text.name')
    assert "spiffe://demo.local/ns/ml/sa/tiny-model" in detail.inner_text()
    _shot(page, "graph")
    page.close()


def test_tap_shows_a_denied_request_within_a_second_with_its_policy(
    traffic: Traffic, browser: Any, login: str
) -> None:
    page = _page(browser, login)
    page.goto(_origin(login) + "/tap?decision=deny")
    page.wait_for_selector("#tap-state:text('live')", timeout=15_000)
    done = threading.Event()
    statuses: list[int] = []

    def send() -> None:
        statuses.append(traffic.admin_as_webapp())
        done.set()

    started = time.monotonic()
    threading.Thread(target=send, daemon=True).start()
    row = page.locator("#tap tbody tr", has_text="ml/no-admin")
    row.wait_for(timeout=10_000)
    shown = time.monotonic()
    assert done.wait(10) and statuses == [403]
    assert shown - started < 1.0, f"the denied request reached the tap after {shown - started:.2f} s"
    text = row.inner_text()
    assert "spiffe://demo.local/ns/web/sa/webapp" in text and "/admin" in text and "403" in text
    assert page.locator("#tap tbody tr[data-decision=allow]").count() == 0  # the filter holds
    _shot(page, "tap")
    page.close()


def test_access_matrix_agrees_with_meshward_check_on_every_pair(mesh: Mesh, browser: Any, login: str) -> None:
    page = _page(browser, login)
    page.goto(_origin(login) + f"/access?method={PROBE[0]}&path={PROBE[1]}")
    cells = page.locator("table.matrix td.cell")
    pairs = {
        (cells.nth(i).get_attribute("data-source"), cells.nth(i).get_attribute("data-target")): cells.nth(
            i
        ).get_attribute("data-decision")
        for i in range(cells.count())
    }
    identities = {w["identity"] for w in mesh.status()["workloads"]}
    services = {f"{w['service']}.{w['namespace']}" for w in mesh.status()["workloads"]}
    assert set(pairs) == {(i, s) for i in identities for s in services}
    for (source, target), shown in pairs.items():
        out = io.StringIO()
        with redirect_stdout(out):
            code = meshward_main(
                ["check", "--state", str(mesh.state), "--from", str(source), "--to", str(target),
                 "--method", PROBE[0], "--path", PROBE[1], "--json"]
            )  # fmt: skip
        decided = json.loads(out.getvalue())["decision"]
        assert (code == 0) == (decided == "allow")
        assert shown == decided, f"{source} -> {target}: page {shown}, check {decided}"
    assert "allow" in pairs.values() and "deny" in pairs.values()
    _shot(page, "access")
    page.close()


def test_login_is_required_and_a_wrong_token_is_refused(browser: Browser, login: str) -> None:
    anonymous = browser.new_context()  # no session cookie
    page = anonymous.new_page()
    origin = _origin(login)
    response = page.goto(origin + "/graph")
    assert response is not None and response.status == 401 and "Login required" in page.content()
    response = page.goto(origin + "/login?token=not-the-token")
    assert response is not None and response.status == 403
    response = page.goto(origin + "/access")
    assert response is not None and response.status == 401
    response = page.goto(origin + "/api/tap")
    assert response is not None and response.status == 401
    anonymous.close()


def test_logging_out_needs_the_csrf_token_and_ends_the_session(
    mesh: Mesh, browser: Browser, login: str
) -> None:
    from meshward.dashboard.launch import login_url

    origin = _origin(login)
    context = browser.new_context()
    page = context.new_page()
    page.goto(login_url(mesh.state, origin))  # a fresh one-time token, as `meshward dashboard` mints
    assert page.url == origin + "/graph"
    forged = context.request.post(origin + "/logout", form={"csrf": "wrong"}, max_redirects=0)
    assert forged.status == 403  # the session cookie alone is not enough
    assert page.goto(origin + "/graph").status == 200  # type: ignore[union-attr]
    page.click("form.logout button")
    page.wait_for_url(origin + "/logged-out")
    assert page.goto(origin + "/graph").status == 401  # type: ignore[union-attr]
    context.close()


def test_every_page_renders_and_no_request_leaves_the_dashboard(browser: Any, login: str) -> None:
    page = _page(browser, login)
    origin = _origin(login)
    headers = page.goto(origin + "/identity").headers  # type: ignore[union-attr]
    assert "default-src 'self'" in headers["content-security-policy"]
    assert headers["x-frame-options"] == "DENY"
    assert "spiffe://demo.local/ns/jobs/sa/batch" in page.locator("table.certs").inner_text()
    _shot(page, "identity")
    page.goto(origin + "/config?from=0&to=1")
    assert "+kind: AuthorizationPolicy" in page.locator("#diff").inner_text()
    _shot(page, "config")
    page.goto(origin + "/audit?decision=deny")
    assert "Chain verified" in page.locator("#verify").inner_text()
    assert "403" in page.locator("table.audit").inner_text()
    _shot(page, "audit")
    for name in ("alerts", "rollouts"):
        page.goto(origin + f"/{name}")
        assert page.locator("main h1").inner_text()
        _shot(page, name)
    cookies = {c["name"]: c for c in browser.context.cookies()}
    session = next(c for n, c in cookies.items() if n.startswith("meshward_session"))
    assert session["httpOnly"] and session["sameSite"] == "Strict"
    page.close()
    foreign = [url for url in browser.seen if not url.startswith(origin + "/")]
    assert browser.seen and not foreign, foreign


def test_meshward_tap_prints_a_denied_request_live(mesh: Mesh, traffic: Traffic) -> None:
    env = dict(os.environ)
    env.pop("MESHWARD_STATE", None)
    tap = subprocess.Popen(
        [PYTHON, "-m", "meshward", "tap", "--state", str(mesh.state), "--to", "tiny-model",
         "--decision", "deny", "--json", "--count", "1", "--timeout", "30"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert tap.stderr is not None
        assert "tapping" in tap.stderr.readline()  # every sidecar's stream is open
        assert traffic.ask("webapp") == 200  # allowed: filtered out
        assert traffic.admin_as_webapp() == 403
        out, _ = tap.communicate(timeout=30)
    finally:
        tap.kill()
    assert tap.returncode == 0
    event = json.loads(out.strip().splitlines()[-1])
    assert event["decision"] == "deny" and event["policy"] == "ml/no-admin" and event["status"] == 403
    assert event["source"] == "spiffe://demo.local/ns/web/sa/webapp" and event["path"] == "/admin"
    assert "messages" not in out and "hello" not in out  # metadata only, never bodies


def test_meshward_top_counts_live_traffic(mesh: Mesh, traffic: Traffic) -> None:
    before = _top(mesh, interval=0.1)
    stop = threading.Event()
    answered: list[int] = []

    def load() -> None:
        deadline = time.monotonic() + 20
        while not stop.is_set() and time.monotonic() < deadline:
            answered.append(traffic.ask("webapp"))

    worker = threading.Thread(target=load, daemon=True)
    worker.start()
    try:
        wait_for(lambda: len(answered) >= 2, 20, what="traffic flowing")
        during = _top(mesh, interval=1.0)
    finally:
        stop.set()
        worker.join(25)
    row = _webapp_row(during)
    assert row["destination"] == "tiny-model.ml" and row["rps"] > 0
    assert row["requests"] > _webapp_row(before)["requests"] and row["p99_ms"] is not None
    batch = next(r for r in during if r["source"] == "jobs/batch")
    assert batch["denied"] == batch["requests"] > 0
    text = _cli_in_process(["top", "--state", str(mesh.state), "--once", "--interval", "0.1"])
    assert text.splitlines()[0].split()[:3] == ["SOURCE", "DESTINATION", "RPS"] and "web/webapp" in text


def _cli_in_process(argv: list[str]) -> str:
    """``meshward ARGV`` in this process (the same code, no interpreter start); its stdout."""
    out = io.StringIO()
    with redirect_stdout(out):
        assert meshward_main(argv) == 0
    return out.getvalue()


def _top(mesh: Mesh, interval: float) -> list[dict[str, Any]]:
    """``meshward top --once --json``."""
    argv = ["top", "--state", str(mesh.state), "--once", "--json", "--interval", str(interval)]
    rows: list[dict[str, Any]] = json.loads(_cli_in_process(argv))
    return rows


def _webapp_row(rows: list[dict[str, Any]]) -> dict[str, Any]:
    return next(r for r in rows if r["source"] == "web/webapp")
