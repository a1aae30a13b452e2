"""Streaming: values split across chunks and SSE events are still masked; blocks cut early."""

from __future__ import annotations

import itertools
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshward.dlp.redact import Outcome
from meshward.dlp.stream import SseRewriter, StreamBlocked, TextRewriter
from tests.dlp.helpers import chat_event, plans, policy, redactor

PLAN = plans(policy(action="mask"))["response"]
BLOCK = plans(policy(action="block", detectors=["credit_card"]))["response"]
CARD = "4111 1111 1111 1111"


def run_sse(
    events: list[bytes], plan: object = PLAN, window: int = 64, split: int | None = None
) -> tuple[bytes, Outcome]:
    outcome = Outcome()
    rw = SseRewriter(plan, redactor(), outcome, window=window)  # type: ignore[arg-type]
    wire = b"".join(events)
    chunks = [wire] if split is None else [wire[i : i + split] for i in range(0, len(wire), split)]
    out = b"".join(rw.feed(c) for c in chunks) + rw.finish()
    return out, outcome


def contents(stream: bytes) -> str:
    text = []
    for event in stream.split(b"\n\n"):
        if event.startswith(b"data: {"):
            doc = json.loads(event[6:])
            for choice in doc.get("choices", []):
                text.append(choice.get("delta", {}).get("content") or "")
    return "".join(text)


def split_tokens(text: str, cuts: list[int]) -> list[str]:
    cuts = sorted({c for c in cuts if 0 < c < len(text)})
    bounds = [0, *cuts, len(text)]
    return [text[a:b] for a, b in itertools.pairwise(bounds)]


def test_card_split_across_two_delta_contents_is_masked_as_a_whole() -> None:
    events = [chat_event("Your card is 4111 11"), chat_event("11 1111 1111, thanks.")] + [
        chat_event(" more") for _ in range(30)
    ]
    out, outcome = run_sse([*events, b"data: [DONE]\n\n"])
    assert contents(out).startswith("Your card is [CARD ****1111], thanks. more")
    assert b"4111" not in out and outcome.counts == {"credit_card": 1}
    parts = out.split(b"\n\n")
    assert json.loads(parts[0][6:])["choices"][0]["delta"]["content"] == "Your card is [CARD ****1111]"
    assert json.loads(parts[1][6:])["choices"][0]["delta"]["content"] == ", thanks."
    assert out.endswith(b"data: [DONE]\n\n")


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.integers(min_value=1, max_value=80), max_size=12),
    st.integers(min_value=1, max_value=64),
    st.sampled_from([CARD, "jane.doe@example.com", "DE89 3704 0044 0532 0130 00", "AKIAIOSFODNN7EXAMPLE"]),
)
def test_any_token_split_and_any_wire_chunking_masks_the_value(
    cuts: list[int], wire_split: int, value: str
) -> None:
    text = f"Here you go: {value} - keep it safe. " + "filler words " * 6
    events = [chat_event(t) for t in split_tokens(text, cuts)]
    out, _ = run_sse([*events, b"data: [DONE]\n\n"], window=48, split=wire_split)
    released = contents(out)
    assert value not in released and "****" in released
    assert released.replace(released[released.index("[") : released.index("]") + 1], value) == text


def test_events_keep_their_order_and_unchanged_events_pass_byte_for_byte() -> None:
    role = b'data: {"choices":[{"index":0,"delta":{"role":"assistant"}}]}\n\n'
    done = b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n'
    events = [role, chat_event("hello"), chat_event(" world"), done, b"data: [DONE]\n\n"]
    out, outcome = run_sse(events)
    assert out == b"".join(events) and outcome.counts == {}


def test_other_strings_in_an_event_are_scanned_in_place() -> None:
    event = b'data: {"choices":[{"index":0,"delta":{"tool_calls":[{"function":{"arguments":"{\\"to\\": \\"jane@example.com\\"}"}}]}}]}\n\n'
    out, outcome = run_sse([event, b"data: [DONE]\n\n"])
    assert b"jane@example.com" not in out and outcome.counts == {"email": 1}
    json.loads(out.split(b"\n\n")[0][6:])


def test_choices_are_separate_texts() -> None:
    events = [
        chat_event("4111 1111 ", index=0),
        chat_event("nothing here ", index=1),
        chat_event("1111 1111", index=0),
    ]
    out, _ = run_sse([*events, b"data: [DONE]\n\n"])
    assert b"4111" not in out and b"[CARD ****1111]" in out


def test_block_in_a_stream_raises_before_the_value_is_released() -> None:
    outcome = Outcome()
    rw = SseRewriter(BLOCK, redactor(), outcome, window=64)
    released = rw.feed(chat_event("safe prefix " * 10))
    released += rw.feed(chat_event("card 4111 1111"))
    with pytest.raises(StreamBlocked) as info:
        for _ in range(20):
            released += rw.feed(chat_event(" 1111 1111 and more text"))
        rw.finish()
    assert info.value.policy == "llm/pii"
    assert b"4111" not in released


def test_text_stream_split_at_every_position() -> None:
    text = ("prefix " * 50 + f"card {CARD} and jane.doe@example.com. " + "suffix " * 50).encode()
    for cut in range(1, len(text), 7):
        outcome = Outcome()
        rw = TextRewriter(PLAN, redactor(), outcome, window=64)
        out = rw.feed(text[:cut]) + rw.feed(text[cut:]) + rw.finish()
        assert b"4111" not in out and b"jane.doe" not in out, cut
        assert out.count(b"****") == 2


def test_text_stream_holds_at_most_the_window() -> None:
    rw = TextRewriter(PLAN, redactor(), Outcome(), window=64)
    held = 0
    for _ in range(50):
        held += 10
        held -= len(rw.feed(b"word word "))
        assert held <= 64 + 64  # the window, plus at most a window of snapping back to a space
    assert len(rw.finish()) == held


def test_text_stream_block() -> None:
    rw = TextRewriter(BLOCK, redactor(), Outcome(), window=32)
    out = rw.feed(b"hello " * 20)
    with pytest.raises(StreamBlocked):
        out += rw.feed(b"card " + CARD.encode() + b" " + b"x " * 40)
    assert b"4111" not in out
