"""Fuzz target: the DLP body inspector and its decoders (JSON in any encoding, sniffing, NDJSON,
forms, charsets); the property checked: only Uninspectable is raised, a rewritten JSON
document still parses in the encoding it came in, and inspecting the result again changes
nothing (what the app receives holds no value the scanner would still rewrite)."""

from __future__ import annotations

import json
import sys

import atheris

with atheris.instrument_imports():
    from fuzz.dlp_setup import PLANS, REDACTOR
    from meshward.dlp.body import Uninspectable, inspect_body
    from meshward.dlp.decode import declared_charset, form_fields, json_encoding, sniff_json
    from meshward.dlp.redact import Outcome

_PLAN = PLANS["request"]
_REDACTOR = REDACTOR
_TYPES = [
    None, "application/json", "text/plain", "text/plain; charset=utf-16", "text/plain; charset=utf-7",
    "text/plain; charset=nope", "application/x-www-form-urlencoded", "application/x-ndjson",
    "application/octet-stream", "application/vnd.x+json",
]  # fmt: skip
_SEEDS = ["jane.doe@example.com", "4111 1111 1111 1111", "\\u0040", '{"a":"', '"}', "%40", "\n", "+"]
_ENCODINGS = ["utf-8", "utf-16", "utf-16-be", "utf-32-le", "utf-8-sig"]


def _body(fdp: atheris.FuzzedDataProvider) -> bytes:
    if fdp.ConsumeBool():
        return fdp.ConsumeBytes(fdp.remaining_bytes())
    text = "".join(
        fdp.PickValueInList(_SEEDS) if fdp.ConsumeBool() else fdp.ConsumeUnicodeNoSurrogates(8)
        for _ in range(fdp.ConsumeIntInRange(0, 12))
    )
    if fdp.ConsumeBool():
        text = json.dumps({"messages": [{"content": text}]}, ensure_ascii=fdp.ConsumeBool())
    return text.encode(fdp.PickValueInList(_ENCODINGS))


def TestOneInput(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    content_type = fdp.PickValueInList(_TYPES)
    body = _body(fdp)
    sniff_json(body)
    form_fields(body)
    declared_charset(content_type)
    outcome = Outcome()
    try:
        out = inspect_body(_PLAN, _REDACTOR, body, content_type, None, outcome)
    except Uninspectable:
        return
    if out is body:
        return
    assert outcome.counts, "rewritten without a finding"
    if content_type in ("application/json", "application/vnd.x+json") or sniff_json(body):
        assert json.loads(out) is not None or True  # still a JSON document
        assert json_encoding(out) == json_encoding(body), (body, out)
    again = Outcome()
    assert inspect_body(_PLAN, _REDACTOR, out, content_type, None, again) == out, (body, out)


def main() -> None:
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
