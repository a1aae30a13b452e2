"""Path normalization (Istio normalize_path + merge_slashes) and target splitting."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshward.http import RemoteProtocolError, normalize_path, split_target

CASES = [
    ("/", "/"),
    ("/v1/models", "/v1/models"),
    ("/a/./b", "/a/b"),
    ("/a/../b", "/b"),
    ("/../../etc/passwd", "/etc/passwd"),
    ("/a/b/..", "/a/"),
    ("/a/b/.", "/a/b/"),
    ("/a//b///c", "/a/b/c"),
    ("//admin", "/admin"),
    ("/a//../b", "/a/b"),  # RFC 3986: '..' removes the empty segment first, then slashes merge
    ("/%2e%2e/admin", "/admin"),  # encoded dots are unreserved: decoded, then removed
    ("/a/%2E%2e/b", "/b"),
    ("/%7euser/%41%62c", "/~user/Abc"),
    ("/a%2520b", "/a%2520b"),  # other encodings stay encoded (upper-case hex)
    ("/v1/chat/completions/", "/v1/chat/completions/"),
    ("/.well-known/x", "/.well-known/x"),
    ("/a/.../b", "/a/.../b"),
]


@pytest.mark.parametrize(("raw", "expected"), CASES)
def test_normalize_table(raw: str, expected: str) -> None:
    assert normalize_path(raw) == expected


# encoded slashes: refused by default (Istio's recommendation), decoded on request
DECODE_CASES = [
    ("/a%2fb", "/a/b"),
    ("/a%2F..%2Fb", "/b"),
    ("/%5c..%5cadmin", "/admin"),
    ("/admin%2Fusers", "/admin/users"),
    ("/v2/repository%2Fmodels%2Ffraud%2Fload", "/v2/repository/models/fraud/load"),
    ("/a%2F%2F%2Fb", "/a/b"),
]


@pytest.mark.parametrize(("raw", "expected"), DECODE_CASES)
def test_encoded_slashes_refused_by_default_and_decoded_on_request(raw: str, expected: str) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        normalize_path(raw)
    assert info.value.status == 400
    assert normalize_path(raw, "decode") == expected


@pytest.mark.parametrize("raw", ["/a%", "/a%2", "/a%zz", "/%g0", "relative", "", "/a%00b"])
def test_malformed_is_the_clients_fault(raw: str) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        normalize_path(raw)
    assert info.value.status == 400


_SEGMENT = st.sampled_from(["", ".", "..", "a", "b", "%2e", "%2E%2e", "%2f", "%7E", "x.y", "...", "%41"])


@given(st.lists(_SEGMENT, max_size=12), st.booleans())
def test_normalization_is_idempotent_and_leaves_no_dot_segments(segments: list[str], trailing: bool) -> None:
    path = "/" + "/".join(segments) + ("/" if trailing else "")
    once = normalize_path(path, "decode")
    assert normalize_path(once) == once
    assert once.startswith("/")
    assert "//" not in once
    assert ".." not in once.split("/")
    assert "." not in once.split("/")


@given(st.text(alphabet="abc/.%2eEfF7", max_size=40))
def test_any_accepted_path_normalizes_safely(text: str) -> None:
    try:
        once = normalize_path("/" + text)
    except RemoteProtocolError:
        return
    assert normalize_path(once) == once
    assert "//" not in once and ".." not in once.split("/")


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("/a?b=1", (None, "/a", "b=1")),
        ("/a", (None, "/a", "")),
        ("http://chat.llm/v1/models", ("chat.llm", "/v1/models", "")),
        ("http://chat.llm:8080?x", ("chat.llm:8080", "/", "x")),
        ("HTTP://Chat.LLM", ("Chat.LLM", "/", "")),
    ],
)
def test_split_target(target: str, expected: tuple[str | None, str, str]) -> None:
    assert split_target(target) == expected


@pytest.mark.parametrize("target", ["https://x/", "ftp://x/", "http://user@x/", "http:///x", "x/y", "/a#f"])
def test_split_target_refuses(target: str) -> None:
    with pytest.raises(RemoteProtocolError):
        split_target(target)
