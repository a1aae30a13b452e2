"""AI protocol classification: tables per protocol, the body, and never raising."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshward.ai.protocol import classify, estimate_prompt_tokens, needs_body
from meshward.ai.types import AIRequest

JSON = {"content-type": "application/json"}

# (method, path, protocol, operation, model from the path, streaming)
HEAD_TABLE = [
    # Open Inference Protocol v2
    ("GET", "/v2", "oip", "metadata", None, False),
    ("GET", "/v2/health/live", "oip", "health", None, False),
    ("GET", "/v2/health/ready", "oip", "health", None, False),
    ("GET", "/v2/models/fraud", "oip", "metadata", "fraud", False),
    ("GET", "/v2/models/fraud/ready", "oip", "metadata", "fraud", False),
    ("GET", "/v2/models/fraud/versions/3", "oip", "metadata", "fraud", False),
    ("GET", "/v2/models/fraud/versions/3/ready", "oip", "metadata", "fraud", False),
    ("POST", "/v2/models/fraud/infer", "oip", "infer", "fraud", False),
    ("POST", "/v2/models/fraud/versions/3/infer", "oip", "infer", "fraud", False),
    ("POST", "/v2/models/llm/generate", "oip", "infer", "llm", False),
    ("POST", "/v2/models/llm/generate_stream", "oip", "infer", "llm", True),
    ("POST", "/v2/repository/index", "oip", "admin", None, False),
    ("POST", "/v2/repository/models/fraud/load", "oip", "admin", "fraud", False),
    ("POST", "/v2/repository/models/fraud/unload", "oip", "admin", "fraud", False),
    ("POST", "/v2/systemsharedmemory/region/x/register", "oip", "admin", None, False),
    ("GET", "/v2/models/fraud/unknown-tail", "oip", "other", None, False),
    ("GET", "/v2beta/models/x", "http", "other", None, False),
    # TF Serving
    ("POST", "/v1/models/resnet:predict", "tfserving", "infer", "resnet", False),
    ("POST", "/v1/models/resnet:classify", "tfserving", "infer", "resnet", False),
    ("POST", "/v1/models/resnet:regress", "tfserving", "infer", "resnet", False),
    ("POST", "/v1/models/resnet/versions/2:predict", "tfserving", "infer", "resnet", False),
    ("POST", "/v1/models/resnet/labels/canary:predict", "tfserving", "infer", "resnet", False),
    ("GET", "/v1/models/resnet/versions/2", "tfserving", "metadata", "resnet", False),
    ("GET", "/v1/models/resnet/labels/stable", "tfserving", "metadata", "resnet", False),
    ("GET", "/v1/models/resnet/metadata", "tfserving", "metadata", "resnet", False),
    ("GET", "/v1/models/resnet/versions/2/metadata", "tfserving", "metadata", "resnet", False),
    # OpenAI-compatible
    ("POST", "/v1/chat/completions", "openai", "chat", None, False),
    ("POST", "/v1/completions", "openai", "completion", None, False),
    ("POST", "/v1/embeddings", "openai", "embed", None, False),
    ("POST", "/v1/responses", "openai", "chat", None, False),
    ("GET", "/v1/responses/resp_123", "openai", "metadata", None, False),
    ("GET", "/v1/models", "openai", "metadata", None, False),
    ("GET", "/v1/models/gpt-4o", "openai", "metadata", "gpt-4o", False),
    ("GET", "/v1/models/resnet", "openai", "metadata", "resnet", False),
    ("POST", "/v1/audio/transcriptions", "openai", "infer", None, False),
    ("POST", "/v1/images/generations", "openai", "infer", None, False),
    ("POST", "/v1/moderations", "openai", "infer", None, False),
    ("POST", "/v1/files", "openai", "admin", None, False),
    ("POST", "/v1/fine_tuning/jobs", "openai", "admin", None, False),
    ("POST", "/v1/batches", "openai", "admin", None, False),
    ("GET", "/v1/something-new", "openai", "other", None, False),
    ("POST", "/openai/v1/chat/completions", "openai", "chat", None, False),
    ("POST", "/openai/deployments/gpt4-prod/chat/completions", "openai", "chat", "gpt4-prod", False),
    # not AI
    ("GET", "/", "http", "other", None, False),
    ("GET", "/healthz", "http", "other", None, False),
    ("GET", "/v1", "http", "other", None, False),
    ("GET", "/openai/other", "http", "other", None, False),
]


@pytest.mark.parametrize(("method", "path", "protocol", "operation", "model", "streaming"), HEAD_TABLE)
def test_head_classification(
    method: str, path: str, protocol: str, operation: str, model: str | None, streaming: bool
) -> None:
    ai = classify(method, path, {}, None)
    assert (ai.protocol, ai.operation, ai.model, ai.streaming) == (protocol, operation, model, streaming)


def _body(**doc: object) -> bytes:
    return json.dumps(doc).encode()


@pytest.mark.parametrize(
    ("path", "body", "model", "streaming", "max_output", "estimate"),
    [
        (
            "/v1/chat/completions",
            _body(model="gpt-4o", messages=[{"role": "user", "content": "x" * 40}]),
            "gpt-4o",
            False,
            None,
            11,
        ),
        ("/v1/chat/completions", _body(model="m", stream=True, max_tokens=64, messages=[]), "m", True, 64, 0),
        (
            "/v1/chat/completions",
            _body(model="m", max_completion_tokens=7, max_tokens=9),
            "m",
            False,
            7,
            None,
        ),
        (
            "/v1/chat/completions",
            _body(model="m", stream="true"),
            "m",
            False,
            None,
            None,
        ),  # only JSON true streams
        (
            "/v1/chat/completions",
            _body(model="m", max_tokens=True),
            "m",
            False,
            None,
            None,
        ),  # bool is not a count
        ("/v1/chat/completions", _body(model="m", max_tokens=-1), "m", False, None, None),
        ("/v1/completions", _body(model="m", prompt=[1, 2, 3, 4]), "m", False, None, 4),
        ("/v1/completions", _body(model="m", prompt="abcdefgh"), "m", False, None, 2),
        ("/v1/embeddings", _body(model="e", input=["abcd", "efgh"]), "e", False, None, 2),
        (
            "/v1/responses",
            _body(model="r", input="abcd", instructions="abcd", max_output_tokens=5),
            "r",
            False,
            5,
            2,
        ),
        (
            "/v1/chat/completions",
            _body(
                model="v",
                messages=[
                    {
                        "role": "user",
                        "content": [{"type": "image_url", "image_url": {"url": "data:" + "A" * 4000}}],
                    }
                ],
            ),
            "v",
            False,
            None,
            4,  # the image is not counted, only the short strings "user" and "image_url"
        ),
        ("/v1/chat/completions", _body(model=42), None, False, None, None),
        ("/v1/chat/completions", _body(model=""), None, False, None, None),
        ("/v1/chat/completions", b"{not json", None, False, None, None),
        ("/v1/chat/completions", b"[1, 2]", None, False, None, None),
        ("/v1/chat/completions", b"\xff\xfe", None, False, None, None),
        ("/v1/chat/completions", b"[" * 100_000, None, False, None, None),
    ],
)
def test_openai_body(
    path: str, body: bytes, model: str | None, streaming: bool, max_output: int | None, estimate: int | None
) -> None:
    ai = classify("POST", path, JSON, body)
    assert (ai.model, ai.streaming, ai.max_output_tokens, ai.prompt_tokens_estimate) == (
        model,
        streaming,
        max_output,
        estimate,
    )


def test_body_read_by_what_it_is_but_only_for_post() -> None:
    body = _body(model="gpt-4o")
    # the app parses JSON sent as text/plain all the same: the model may not hide behind it
    assert classify("POST", "/v1/chat/completions", {"content-type": "text/plain"}, body).model == "gpt-4o"
    assert (
        classify(
            "POST", "/v1/chat/completions", {"content-type": "application/json; charset=utf-8"}, body
        ).model
        == "gpt-4o"
    )
    assert classify("POST", "/v1/chat/completions", {}, body).model == "gpt-4o"  # no content type: try JSON
    assert classify("GET", "/v1/chat/completions", JSON, body).model is None
    # a body never overrides a model named by the path
    assert classify("POST", "/v2/models/fraud/infer", JSON, _body(model="other")).model == "fraud"


@pytest.mark.parametrize(
    ("method", "path", "headers", "expected"),
    [
        ("POST", "/v1/chat/completions", JSON, True),
        ("POST", "/v1/chat/completions", {}, True),
        ("POST", "/v1/embeddings", {"content-type": "application/vnd.api+json"}, True),
        ("POST", "/v1/audio/transcriptions", {"content-type": "multipart/form-data; boundary=x"}, True),
        ("POST", "/v1/chat/completions", {"content-type": "text/plain"}, True),
        ("GET", "/v1/chat/completions", JSON, False),
        ("GET", "/v1/models", JSON, False),
        ("POST", "/v1/files", JSON, False),
        ("POST", "/v2/models/fraud/infer", JSON, False),  # the model is in the path
        ("POST", "/v1/models/resnet:predict", JSON, False),
        ("POST", "/openai/deployments/d/chat/completions", JSON, False),
        ("POST", "/anything", JSON, False),
    ],
)
def test_needs_body(method: str, path: str, headers: dict[str, str], expected: bool) -> None:
    assert needs_body(classify(method, path, headers, None), method, headers) is expected


def test_needs_body_is_false_once_the_model_is_known() -> None:
    ai = classify("POST", "/v1/chat/completions", JSON, _body(model="m"))
    assert needs_body(ai, "POST", JSON) is False


def test_estimate_without_prompt() -> None:
    assert estimate_prompt_tokens({"model": "m"}) is None


@settings(max_examples=150, deadline=None)
@given(
    method=st.sampled_from(["GET", "POST", "PUT", "get", ""]),
    path=st.one_of(
        st.text(max_size=60),
        st.builds(lambda tail: "/v2/models/" + tail, st.text(max_size=30)),
        st.builds(lambda tail: "/v1/" + tail, st.text(max_size=30)),
        st.builds(lambda tail: "/openai/deployments/" + tail, st.text(max_size=30)),
    ),
    headers=st.dictionaries(st.sampled_from(["content-type", "host", "x"]), st.text(max_size=20), max_size=3),
    body=st.one_of(
        st.none(),
        st.binary(max_size=200),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
            lambda children: (
                st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
            ),
            max_leaves=20,
        ).map(lambda doc: json.dumps(doc).encode()),
    ),
)
def test_never_raises(method: str, path: str, headers: dict[str, str], body: bytes | None) -> None:
    ai = classify(method, path, headers, body)
    assert isinstance(ai, AIRequest)
    assert ai.model is None or isinstance(ai.model, str)
    assert isinstance(needs_body(ai, method, headers), bool)


@settings(max_examples=100, deadline=None)
@given(model=st.text(min_size=1, max_size=40), stream=st.booleans())
def test_model_round_trips_through_the_body(model: str, stream: bool) -> None:
    ai = classify(
        "POST", "/v1/chat/completions", JSON, json.dumps({"model": model, "stream": stream}).encode()
    )
    assert (ai.model, ai.streaming) == (model, stream)
