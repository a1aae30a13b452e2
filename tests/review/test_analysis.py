"""review and discover on hand-made data (tables), reproducibility (property), rendering."""

from __future__ import annotations

import html.parser
import json
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from meshward.resources.loader import load_text
from meshward.review.access import review
from meshward.review.compliance import Controls, map_controls
from meshward.review.data import Alert, CaCertificate, IssuedCertificate, MeshData, ObservedRequest, Window
from meshward.review.inventory import discover
from meshward.review.render import render

CONFIG = """
apiVersion: meshward.dev/v1alpha1
kind: Mesh
metadata: {name: m}
spec: {audit: {recordAllowed: true}}
---
apiVersion: meshward.dev/v1alpha1
kind: Workload
metadata: {name: model, namespace: ml, labels: {app: model}}
spec: {}
---
apiVersion: meshward.dev/v1alpha1
kind: Workload
metadata: {name: bare, namespace: ml, labels: {app: bare}}
spec: {}
---
apiVersion: meshward.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: a-any, namespace: ml}
spec:
  selector: {matchLabels: {app: model}}
  rules: [{to: [{operation: {paths: ["/v2/*"]}}]}]
---
apiVersion: meshward.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: b-unused, namespace: ml}
spec:
  selector: {matchLabels: {app: model}}
  rules: [{from: [{source: {principals: ["ml/never"]}}], to: [{operation: {methods: [GET]}}]}]
---
apiVersion: meshward.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: c-deny-all, namespace: ml}
spec:
  selector: {matchLabels: {app: model}}
  action: DENY
  rules: [{from: [{source: {principals: ["lab/*"]}}]}]
---
apiVersion: meshward.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: d-lab, namespace: ml}
spec:
  selector: {matchLabels: {app: model}}
  rules: [{from: [{source: {principals: ["lab/x"]}}], to: [{operation: {methods: [GET]}}]}]
---
apiVersion: meshward.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: e-dry, namespace: ml, annotations: {meshward.dev/dry-run: "true"}}
spec:
  selector: {matchLabels: {app: model}}
  action: DENY
  rules: [{to: [{operation: {methods: [GET]}}]}]
"""
TD = "demo.local"
MODEL = "spiffe://demo.local/ns/ml/sa/model"
CALLER = "spiffe://demo.local/ns/ml/sa/caller"
INTRUDER = "spiffe://demo.local/ns/lab/sa/x"
DAY = 86_400_000
END = 1_800_000_000_000
WINDOW = Window(END - 30 * DAY, END)

REQUESTS = [
    ObservedRequest(
        END - 2 * DAY,
        MODEL,
        CALLER,
        "POST",
        "/v2/models/fraud/infer",
        model="fraud",
        operation="infer",
        policy="ml/a-any",
        rule=0,
        dlp_findings=(("email", 2),),
    ),
    ObservedRequest(
        END - DAY,
        MODEL,
        CALLER,
        "POST",
        "/v2/models/fraud/infer",
        model="fraud",
        operation="infer",
        policy="ml/a-any",
        rule=0,
    ),
    *[
        ObservedRequest(
            END - DAY + i,
            MODEL,
            INTRUDER,
            "GET",
            f"/v2/models/<b>{i}",
            decision="deny",
            policy="ml/c-deny-all",
            rule=0,
            reason="denied by ml/c-deny-all rules[0]",
            status=403,
        )
        for i in range(3)
    ],
    # Allowed by ml/a-any; the audit names the dry-run policy that would have denied it.
    ObservedRequest(
        END - DAY,
        MODEL,
        CALLER,
        "GET",
        "/v2/models/fraud/infer",
        model="fraud",
        operation="infer",
        decision="dry_run_deny",
        policy="ml/e-dry",
        rule=0,
    ),
    ObservedRequest(
        END - 90 * DAY, MODEL, CALLER, "GET", "/old", policy="ml/b-unused", rule=0
    ),  # outside the window
]
CERTS = [
    IssuedCertificate(MODEL, "01", "2027-01-01T00:00:00Z", "2027-01-01T01:00:00Z"),
    IssuedCertificate(
        "spiffe://demo.local/ns/ml/sa/idle", "02", "2027-01-01T00:00:00Z", "2027-01-01T01:00:00Z"
    ),
    IssuedCertificate(
        "spiffe://demo.local/ns/meshward-system/sa/operator",
        "03",
        "2027-01-01T00:00:00Z",
        "2027-01-02T00:00:00Z",
    ),
]
CA = [CaCertificate("intermediate", "CN=i", "2027-01-20T00:00:00Z")]  # END is 2027-01-15T08:00Z


def _data(requests: list[ObservedRequest] = REQUESTS, alerts: tuple[Alert, ...] = ()) -> MeshData:
    return MeshData.of(TD, load_text(CONFIG), requests=requests, certificates=CERTS, ca=CA, alerts=alerts)


def test_review_tables() -> None:
    doc = review(_data(), WINDOW)
    use = {(r["policy"], r["rule"]): r["matches"] for r in doc["rules"]}
    assert use[("ml/a-any", 0)] == 3 and use[("ml/e-dry", 0)] == 1  # the dry-run deny credits both
    assert [(d["policy"], d["requests"]) for d in doc["dryRunDenials"]] == [("ml/e-dry", 1)]
    assert [(u["policy"], u["rule"]) for u in doc["unusedGrants"]] == [("ml/b-unused", 0), ("ml/d-lab", 0)]
    assert [(b["policy"], b["field"], b["seen"]) for b in doc["broadRules"]] == [
        ("ml/a-any", "principals", ["demo.local/ns/ml/sa/caller"]),
        ("ml/a-any", "paths", ["/v2/models/fraud/infer"]),
    ]
    assert [(s["policy"], s["shadowedBy"]) for s in doc["shadowedPolicies"]] == [
        ("ml/d-lab", "ml/c-deny-all rules[0]")
    ]
    assert [s["identity"] for s in doc["staleIdentities"]] == ["spiffe://demo.local/ns/ml/sa/idle"]
    assert [(d["identity"], d["path"], d["requests"]) for d in doc["denials"]] == [
        ("demo.local/ns/lab/sa/x", "/v2/models/{*}", 3)
    ]
    assert doc["dlpFindings"] == [{"service": "model.ml", "detector": "email", "count": 2}]
    assert doc["unusedDenies"] == []
    assert [e["subject"] for e in doc["expiry"]] == ["intermediate"]
    checks = {(f["check"], f["subject"]) for f in doc["findings"]}
    assert ("repeated-denials", "demo.local/ns/lab/sa/x") in checks and (
        "ca-expiry",
        "CA intermediate",
    ) in checks
    (suggestion,) = doc["suggestions"]
    assert suggestion["replaces"] == ["ml/a-any", "ml/b-unused", "ml/d-lab"]  # DENY policies stay
    assert suggestion["stillAllowed"] == 3 and sum(d["requests"] for d in suggestion["wouldDeny"]) == 3


def test_discover_tables() -> None:
    doc = discover(_data(), WINDOW)
    bare, model = doc["services"]  # sorted by namespace, then name
    assert (model["service"], model["identity"], model["models"]) == ("model", MODEL, ["fraud"])
    assert {f["check"] for f in model["findings"]} >= {"allows-any-caller", "no-dlp", "no-limits"}
    assert [c["identity"] for c in model["callers"]] == [INTRUDER, CALLER]
    assert [f["check"] for f in bare["findings"]] == ["no-policy"]
    assert bare["exposure"]["defaultDeny"] is True and bare["callers"] == []


def test_alerts_plug_in_as_findings() -> None:
    alert = Alert(END - DAY, "high", "ml/caller", "prompt injection burst", "detection")
    doc = review(_data(alerts=(alert,)), WINDOW)
    assert doc["alerts"][0]["message"] == "prompt injection burst"
    assert any(f["check"] == "alert:detection" for f in doc["findings"])


@settings(max_examples=5, deadline=None)
@given(st.randoms(use_true_random=False))
def test_same_data_in_any_order_gives_the_same_report(rng: random.Random) -> None:
    shuffled = list(REQUESTS)
    rng.shuffle(shuffled)
    for make in (review, discover):
        assert json.dumps(make(_data(shuffled), WINDOW)) == json.dumps(make(_data(), WINDOW))


def test_compliance_mapping() -> None:
    none = map_controls(Controls(False, (), False, (), (), False, False, False))
    assert {c["status"] for c in none} == {"missing"}
    full = map_controls(Controls(True, ("ml/p",), False, ("ml/dlp",), ("ml/rl",), True, True, True))
    assert {c["status"] for c in full} == {"covered"}
    llm10 = next(c for c in full if c["id"] == "LLM10")
    assert llm10["by"] == ["AuthorizationPolicy ml/p", "RateLimitPolicy ml/rl"]
    open_door = map_controls(Controls(True, ("ml/p",), True, (), ("ml/rl",), True, True, True))
    assert next(c for c in open_door if c["id"] == "LLM10")["status"] == "partial"


class _Text(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def test_rendering_escapes_what_requests_carry() -> None:
    hostile = ObservedRequest(
        END - DAY,
        MODEL,
        INTRUDER,
        "GET",
        "/x",
        model="<script>alert(1)</script>|",
        decision="deny",
        status=403,
    )
    doc = discover(_data([*REQUESTS, hostile]), WINDOW)
    page = render(doc, "html")
    parsed = _Text()
    parsed.feed(page)
    assert "script" not in parsed.tags and "<script>alert(1)</script>|" in "".join(parsed.text)
    markdown = render(doc, "md")
    assert "<script>" not in markdown and "&lt;script&gt;alert(1)&lt;/script&gt;\\|" in markdown
    assert "model.ml" in render(doc, "table")
