"""The DetectionPolicy / AlertSink kinds (contract, located errors) and the sidecar's parsing."""

from __future__ import annotations

import json

import pytest

from meshward.config.snapshot import WorkloadInfo
from meshward.detection.aggregate import MAX_DISTINCT, WindowAggregate
from meshward.detection.filter import _labels, _rows, build, detection_state
from meshward.filters.base import Filter, Peer, RequestContext, SidecarRuntime
from meshward.resources.detection import DetectionPolicy
from meshward.resources.loader import LoadError, load_text
from tests.support.sidecar import make_snapshot

CONTRACT = """\
apiVersion: meshward.dev/v1alpha1
kind: DetectionPolicy
metadata: {name: guard-fraud, namespace: ml}
spec:
  selector: {matchLabels: {app: fraud-model}}      # the protected workloads
  detectors:                                        # type: volume | auth | violations | exfiltration | extraction | drift
  - {type: extraction, threshold: 0.90, minQueries: 50}
  - {type: violations, maxDenialsPerMinute: 20}
  response: {quarantine: {duration: 10m}, mode: enforce}   # or dryRun; no response = alert only
"""


def test_the_contract_example_loads() -> None:
    [policy] = load_text(CONTRACT)
    assert isinstance(policy, DetectionPolicy)
    assert [d.type for d in policy.spec.detectors] == ["extraction", "violations"]
    assert policy.spec.detectors[0].threshold == 0.90 and policy.spec.detectors[0].min_queries == 50
    assert policy.spec.response is not None and policy.spec.response.quarantine is not None
    assert policy.spec.response.quarantine.seconds == 600 and policy.spec.response.mode == "enforce"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("{type: extraction, maxDenialsPerMinute: 3}", "not a parameter of the extraction detector"),
        ("{type: sniffing}", "type"),
        ("{type: extraction, threshold: 1.5}", "threshold"),
        ("{type: violations, maxDenialsPerMinute: 20, typo: 1}", "typo"),
    ],
)
def test_a_bad_detector_is_refused_with_its_line(change: str, message: str) -> None:
    text = CONTRACT.replace("{type: violations, maxDenialsPerMinute: 20}", change)
    with pytest.raises(LoadError) as exc:
        load_text(text, "guard.yaml")
    assert message in str(exc.value) and "guard.yaml:8" in str(exc.value)


def test_an_alert_sink_needs_a_url() -> None:
    with pytest.raises(LoadError):
        load_text(
            "apiVersion: meshward.dev/v1alpha1\nkind: AlertSink\nmetadata: {name: s}\nspec: {format: slack}\n"
        )


@pytest.mark.parametrize(
    ("body", "rows"),
    [
        (
            {"inputs": [{"name": "x", "shape": [2, 2], "datatype": "FP32", "data": [[1, 2], [3, 4]]}]},
            [[1, 2], [3, 4]],
        ),
        (
            {"inputs": [{"name": "x", "shape": [2, 2], "datatype": "FP32", "data": [1, 2, 3, 4]}]},
            [[1, 2], [3, 4]],
        ),
        ({"inputs": [{"name": "x", "shape": [1, 2], "datatype": "BYTES", "data": ["a", "b"]}]}, []),
        ({"inputs": []}, []),
        ({"nope": 1}, []),
    ],
)
def test_rows_of_an_oip_request(body: dict[str, object], rows: list[list[float]]) -> None:
    assert _rows(json.dumps(body).encode()) == rows


@pytest.mark.parametrize(
    ("body", "labels"),
    [
        ({"outputs": [{"name": "predict", "datatype": "INT64", "shape": [2], "data": [1, 0]}]}, ["1", "0"]),
        (
            {
                "outputs": [
                    {"name": "p", "datatype": "FP32", "shape": [2, 3], "data": [0.1, 0.7, 0.2, 0.5, 0.1, 0.4]}
                ]
            },
            ["1", "0"],
        ),
        ({"outputs": [{"name": "score", "datatype": "FP32", "shape": [1], "data": [0.73]}]}, ["0.7"]),
        ({"outputs": "x"}, []),
    ],
)
def test_labels_of_an_oip_response(body: dict[str, object], labels: list[str]) -> None:
    assert _labels(json.dumps(body).encode()) == labels


def test_the_window_keeps_counts_not_content() -> None:
    window = WindowAggregate(0.0)
    for i in range(200):
        window.request(
            "spiffe://d/ns/a/sa/b", f"r{i}", 403, "deny", f"/p{i}", "m", 10, 20, 0, 0, False, False
        )
    doc = window.to_json("ml/m", "v1", 1.0)["callers"]["spiffe://d/ns/a/sa/b"]
    assert doc["requests"] == 200 and doc["denials"] == 200 and doc["authz_denials"] == 200
    assert len(doc["paths"]) == MAX_DISTINCT and len(doc["samples"]) == 3


def test_prompts_are_counted_by_hash_only() -> None:
    window = WindowAggregate(0.0)
    for i in range(10):
        window.prompt("c", f"Classify this transaction as fraud or not: amount {i}")
    window.prompt("c", "hello")
    doc = window.to_json("ml/m", None, 1.0)["prompts"]["c"]
    assert doc == {"prompts": 11, "distinct": 11, "top_prefix": 10}
    assert "amount" not in json.dumps(window.to_json("ml/m", None, 1.0))


def filter_and_request(request_id: str) -> tuple[Filter, SidecarRuntime, RequestContext]:
    """The detection filter of a fraud-model sidecar under the contract policy, and a request."""
    snapshot = make_snapshot("ml/fraud-model", policies=load_text(CONTRACT), labels={"app": "fraud-model"})
    runtime = SidecarRuntime(
        WorkloadInfo("fraud-model", "ml", "fraud-model", "fraud-model", {"app": "fraud-model"}), "demo.local"
    )
    f = build(snapshot, runtime)
    assert f is not None
    ctx = RequestContext(
        request_id=request_id,
        direction="inbound",
        peer=Peer("127.0.0.1", 1, "spiffe://demo.local/ns/a/sa/b", "a", "b"),
        method="POST",
        path="/v2/models/fraud/infer",
        query="",
        host="fraud-model.ml",
        headers={},
        destination_port=1,
        start=0.0,
    )
    return f, runtime, ctx


def test_the_filter_counts_every_outcome_in_its_window() -> None:
    f, runtime, ctx = filter_and_request("r1")
    ctx.decision, ctx.response_status = "deny", 403
    f.on_complete(ctx)
    window = detection_state(runtime).window
    assert window.callers["spiffe://demo.local/ns/a/sa/b"].denials == 1
    assert detection_state(runtime).prada is not None  # the extraction detector is on


def test_a_failing_detector_never_fails_the_request() -> None:
    f, runtime, ctx = filter_and_request("r2")
    ctx.ai.protocol, ctx.ai.operation, ctx.response_status = "oip", "infer", 200
    ctx.body = b'{"inputs": [{"data": [1, 2'  # cut short: the PRADA path cannot parse it
    f.on_response_headers(ctx, 200, [])
    assert f.on_response_chunk(ctx, b"not json either") == b"not json either"
    f.on_complete(ctx)  # logs, does not raise
    assert detection_state(runtime).window.callers["spiffe://demo.local/ns/a/sa/b"].requests == 1
