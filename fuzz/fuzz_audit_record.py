"""Fuzz target: the audit record decoder and the ingest validator, then every export format;
the properties checked: a line is either refused (RecordError, EventInvalid) or accepted, never
another exception; an accepted event formats to OCSF JSON (valid JSON, provenance kept), CEF
(one line) and syslog (one line) without raising."""

from __future__ import annotations

import json
import sys

import atheris

with atheris.instrument_imports(include=["meshward"]):
    from meshward.audit.chain import RecordError, parse_record_line, record_hash
    from meshward.audit.formats import to_cef, to_ocsf_json, to_syslog
    from meshward.audit.validate import EventInvalid, check_event

SOURCE = "spiffe://demo.local/ns/web/sa/webapp"


def _line(data: bytes) -> bytes:
    """Half the time the raw bytes; else the bytes as an event inside a correctly hashed record,
    so the validator and the formatters are reached as often as the decoder."""
    if not data or data[0] % 2 == 0:
        return data[1:]
    try:
        event = json.loads(data[1:])
    except (ValueError, UnicodeDecodeError, RecursionError):
        return data[1:]
    prev = "0" * 64
    try:
        digest = record_hash(1, prev, event)
        return json.dumps({"seq": 1, "prev": prev, "hash": digest, "event": event}).encode()
    except (TypeError, ValueError, RecursionError):
        return data[1:]


def TestOneInput(data: bytes) -> None:
    line = _line(data)
    try:
        record = parse_record_line(line)
        check_event(record.event, SOURCE, len(line))
    except (RecordError, EventInvalid):
        return
    except RecursionError:
        return  # json.loads on hostile nesting: the store sees a RecordError-like refusal upstream
    ocsf = json.loads(to_ocsf_json(record, SOURCE, "c0ffee00"))
    if ocsf["unmapped"]["meshward_audit"]["source"] != SOURCE:
        raise AssertionError("provenance lost")
    for text in (to_cef(record, SOURCE, "c0ffee00"), to_syslog(record, SOURCE, "c0ffee00")):
        if "\n" in text or "\r" in text:
            raise AssertionError(f"a line break in an exported line: {text[:200]!r}")


def main() -> None:
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
