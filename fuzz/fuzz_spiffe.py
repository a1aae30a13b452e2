"""Fuzz target: SPIFFE ID parsing (all three spellings); the properties checked: only
InvalidSpiffeId is raised, an accepted ID is well-formed per the SPIFFE ID spec (segments of
``[A-Za-z0-9._-]``, never ``.`` or ``..``), it round-trips through every spelling, and a URI is
accepted only when it is exactly the canonical form (full match: nothing before or after)."""

from __future__ import annotations

import re
import sys

import atheris

with atheris.instrument_imports(include=["meshward"]):
    from meshward.identity.spiffe import InvalidSpiffeId, SpiffeId, is_reserved, parse_identity

_SEGMENT = re.compile(r"[A-Za-z0-9._-]+")
_TRUST_DOMAIN = re.compile(r"[a-z0-9._-]+")


def _check(sid: SpiffeId) -> None:
    if not _TRUST_DOMAIN.fullmatch(sid.trust_domain):
        raise AssertionError(f"accepted trust domain {sid.trust_domain!r}")
    for segment in (sid.namespace, sid.service_account):
        if not _SEGMENT.fullmatch(segment) or segment in (".", ".."):
            raise AssertionError(f"accepted segment {segment!r}")
    for form in (sid.uri, sid.principal):
        if parse_identity(form, "other.domain") != sid:
            raise AssertionError(f"{form!r} does not round-trip")
    if parse_identity(sid.short, sid.trust_domain) != sid:
        raise AssertionError(f"{sid.short!r} does not round-trip")
    if SpiffeId.from_uri(sid.uri) != sid:
        raise AssertionError(f"{sid.uri!r} does not round-trip")
    is_reserved(sid)


def TestOneInput(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    text = fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(0, 300))
    prefix = fdp.PickValueInList(["", "spiffe://demo.local/", "spiffe://", "demo.local/ns/", "ml/"])
    for candidate in (text, prefix + text):
        try:
            sid = parse_identity(candidate, "demo.local")
        except InvalidSpiffeId:
            pass
        else:
            _check(sid)
        try:
            exact = SpiffeId.from_uri(candidate)
        except InvalidSpiffeId:
            continue
        if exact.uri != candidate:
            raise AssertionError(f"from_uri accepted {candidate!r} as {exact.uri!r}")
        _check(exact)


def main() -> None:
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
