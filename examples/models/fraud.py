"""A "fraud" classifier served over the Open Inference Protocol v2 (KServe), stdlib HTTP.

Run: ``python -m examples.models.fraud --port 8080``

The model is a scikit-learn logistic regression trained at start-up on the breast-cancer data
set that ships with scikit-learn (no download, fixed seed): 30 numeric features per row, the
positive class (``1`` = "fraud") standing in for the data set's malignant label. It is a stand-in
signal for a real fraud model, not a fraud model.

Endpoints (https://kserve.github.io/website/docs/concepts/architecture/data-plane/v2-protocol):

    GET  /v2/health/live            server liveness         {"live": true}
    GET  /v2/health/ready           server readiness        {"ready": true}
    GET  /v2                        server metadata
    GET  /v2/models/fraud           model metadata (inputs, outputs)
    GET  /v2/models/fraud/ready     200 when loaded, 503 when unloaded
    POST /v2/models/fraud/infer     inputs: [{"name": "input-0", "shape": [N, 30],
                                               "datatype": "FP32", "data": [...]}]
                                    outputs: "predict" (INT64, 1 = fraud) and
                                             "probability" (FP32, P(fraud))
    POST /v2/repository/index                   the repository (admin)
    POST /v2/repository/models/fraud/load       load the model (admin)
    POST /v2/repository/models/fraud/unload     unload the model (admin)

Paths with ``/versions/<v>`` after the model name are accepted too. ``--drift X`` adds X to every
score (the drifted ``fraud-v2`` of ``examples/rollout``).
"""

from __future__ import annotations

import argparse
import threading
from typing import Any

import numpy as np
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from examples.models.httpjson import BadRequest, JsonHandler, serve

__all__ = ["FEATURES", "FraudHandler", "main", "sample_rows", "train"]

FEATURES = 30
SEED = 7


def _dataset() -> tuple[Any, Any]:
    data = load_breast_cancer()
    return data.data, (data.target == 0).astype(np.int64)  # 1 = malignant, our "fraud"


def train() -> tuple[Pipeline, float]:
    """Fit the classifier; return it and its accuracy on a held-out quarter."""
    x, y = _dataset()
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.25, random_state=SEED, stratify=y)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000, random_state=SEED))
    model.fit(x_train, y_train)
    return model, float(model.score(x_test, y_test))


def sample_rows(count: int, fraud: bool | None = None) -> list[list[float]]:
    """Real rows from the data set (for clients and tests); ``fraud`` picks the label."""
    x, y = _dataset()
    rows = x if fraud is None else x[y == int(fraud)]
    return [[float(v) for v in row] for row in rows[:count]]


class FraudHandler(JsonHandler):
    model_name = "fraud"
    model_version = "1"
    drift = 0.0
    classifier: Pipeline | None = None
    loaded = True
    lock = threading.Lock()

    # -- server ----------------------------------------------------------------------------
    def live(self) -> None:
        self.send_json(200, {"live": True})

    def ready(self) -> None:
        self.send_json(200, {"ready": True})

    def server_metadata(self) -> None:
        self.send_json(
            200, {"name": "meshward-example-fraud", "version": "0.1.0", "extensions": ["model_repository"]}
        )

    def repository_index(self) -> None:
        self.read_body()
        state = "READY" if self.loaded else "UNAVAILABLE"
        reason = "" if self.loaded else "unloaded"
        entry = {"name": self.model_name, "version": self.model_version, "state": state, "reason": reason}
        self.send_json(200, [entry])

    def repository_action(self) -> None:
        self.read_body()
        path = self.path.split("?", 1)[0]
        name, _, action = path.removeprefix("/v2/repository/models/").partition("/")
        if name != self.model_name or action not in ("load", "unload"):
            self.send_json(404, {"error": f"unknown model or action: {name}/{action}"})
            return
        with self.lock:
            type(self).loaded = action == "load"
        self.send_json(200, {})

    # -- model -----------------------------------------------------------------------------
    def model_route(self) -> None:
        path = self.path.split("?", 1)[0]
        rest = path.removeprefix("/v2/models/")
        name, _, tail = rest.partition("/")
        if tail.startswith("versions/"):
            version, _, tail = tail.removeprefix("versions/").partition("/")
            if version != self.model_version:
                self.read_body()
                self.send_json(404, {"error": f"model {name} has no version {version}"})
                return
        if name != self.model_name:
            self.read_body()
            self.send_json(404, {"error": f"unknown model {name!r}"})
            return
        if self.command == "GET" and tail == "":
            self.metadata()
        elif self.command == "GET" and tail == "ready":
            status = 200 if self.loaded else 503
            self.send_json(status, {"name": name, "ready": self.loaded})
        elif self.command == "POST" and tail == "infer":
            self.infer()
        else:
            self.read_body()
            self.send_json(404, {"error": f"no route for {self.command} {path}"})

    def metadata(self) -> None:
        self.send_json(
            200,
            {
                "name": self.model_name,
                "versions": [self.model_version],
                "platform": "scikit-learn",
                "inputs": [{"name": "input-0", "datatype": "FP32", "shape": [-1, FEATURES]}],
                "outputs": [
                    {"name": "predict", "datatype": "INT64", "shape": [-1]},
                    {"name": "probability", "datatype": "FP32", "shape": [-1]},
                ],
            },
        )

    def infer(self) -> None:
        request = self.read_json()
        if not self.loaded or self.classifier is None:
            self.send_json(503, {"error": f"model {self.model_name} is not loaded"})
            return
        rows = _input_rows(request)
        proba = self.classifier.predict_proba(rows)[:, 1]
        if self.drift:  # the bad fraud-v2 of examples/rollout: every score pushed up
            proba = np.minimum(1.0, proba + self.drift)
        predict = (proba >= 0.5).astype(np.int64)
        wanted = {o.get("name") for o in request.get("outputs") or [] if isinstance(o, dict)}
        outputs = [
            {"name": "predict", "datatype": "INT64", "shape": [len(rows)], "data": predict.tolist()},
            {
                "name": "probability",
                "datatype": "FP32",
                "shape": [len(rows)],
                "data": [round(float(p), 6) for p in proba],
            },
        ]
        if wanted:
            outputs = [o for o in outputs if o["name"] in wanted]
        response: dict[str, Any] = {"model_name": self.model_name, "model_version": self.model_version}
        if "id" in request:
            response["id"] = request["id"]
        response["outputs"] = outputs
        self.send_json(200, response)

    routes = {
        ("GET", "/v2/health/live"): "live",
        ("GET", "/v2/health/ready"): "ready",
        ("GET", "/v2"): "server_metadata",
        ("POST", "/v2/repository/index"): "repository_index",
    }
    prefix_routes = [
        ("POST", "/v2/repository/models/", "repository_action"),
        ("GET", "/v2/models/", "model_route"),
        ("POST", "/v2/models/", "model_route"),
    ]


def _input_rows(request: Any) -> Any:
    """The one input tensor as an ``(N, 30)`` float array, or a 400 that says what is wrong."""
    if (
        not isinstance(request, dict)
        or not isinstance(request.get("inputs"), list)
        or len(request["inputs"]) != 1
    ):
        raise BadRequest("expected {'inputs': [one tensor]}")
    tensor = request["inputs"][0]
    if not isinstance(tensor, dict) or "data" not in tensor or "shape" not in tensor:
        raise BadRequest("an input tensor needs 'name', 'shape', 'datatype' and 'data'")
    if tensor.get("datatype", "FP32") not in ("FP32", "FP64", "INT32", "INT64"):
        raise BadRequest(f"unsupported datatype {tensor.get('datatype')!r}; use FP32")
    try:
        data = np.asarray(tensor["data"], dtype=np.float64).reshape(-1)
        shape = [int(d) for d in tensor["shape"]]
    except (TypeError, ValueError):
        raise BadRequest("tensor 'data' must be numbers and 'shape' integers") from None
    if len(shape) == 1:
        shape = [1, *shape]
    if len(shape) != 2 or shape[1] != FEATURES or shape[0] * shape[1] != data.size or shape[0] < 1:
        raise BadRequest(f"shape must be [N, {FEATURES}] and match the data ({data.size} values)")
    if not np.isfinite(data).all():
        raise BadRequest("tensor data must be finite numbers")
    return data.reshape(shape)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--model-name", default="fraud")
    parser.add_argument("--model-version", default="1")
    parser.add_argument("--verbose", action="store_true", help="log request lines (never payloads)")
    parser.add_argument("--drift", type=float, default=0.0, help="add this to every score (a drifted model)")
    args = parser.parse_args(argv)
    classifier, accuracy = train()
    FraudHandler.drift = max(0.0, min(1.0, args.drift))
    FraudHandler.classifier = classifier
    FraudHandler.model_name = args.model_name
    FraudHandler.model_version = args.model_version
    FraudHandler.verbose = args.verbose
    serve(
        FraudHandler,
        args.host,
        args.port,
        f"fraud model {args.model_name} v{args.model_version} (held-out accuracy {accuracy:.3f})",
    )


if __name__ == "__main__":
    main()
