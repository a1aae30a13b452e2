"""The detector catalogue: candidate patterns for each detector family, and user detectors.

A :class:`CandidatePattern` is a plain regular expression ``body`` (the common subset of
Hyperscan and Python ``re``: classes, bounded or unbounded repeats, alternation — no
assertions) plus optional one-character guards ``before``/``after`` that the value may not be
glued to (a card is not the tail of a longer digit run). Hyperscan scans the bodies; Python's
``re`` then applies the guards and a validator confirms each candidate (see ``scanner``).

Built-in families (the names a ``DataProtectionPolicy`` lists) and what they find:

- ``email``        addresses with a real-looking TLD (``icon@2x.png`` is not one)
- ``phone``        ``+``-prefixed international numbers, NANP numbers written with separators
- ``credit_card``  13–19 digits, known IIN range + length, Luhn, consistent grouping
- ``iban``         ISO 13616 with mod-97 check (compact or grouped by four)
- ``national_id``  US SSN (dashed or spaced), ES DNI, IT codice fiscale, BR CPF (check digits)
- ``ip_address``   IPv4 dotted quads and IPv6 (``ipaddress``-valid). ``1.2.3.4`` *is* flagged:
  a dotted quad cannot be told from an address; ``v1.2.3.4``, ``1.2.3.4.5``, ``256.1.1.1``,
  ``01.2.3.4`` and ``0.0.0.0`` are not. IPv6 needs three hex groups (``::1`` is not flagged).
- ``secrets``      AWS access key ids (and a secret key assigned next to ``aws_secret_access_key``),
  PEM private keys, JWTs, OpenAI, GitHub, Slack (tokens and webhooks) and Google API keys
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from meshward.dlp import validators as v

__all__ = [
    "BUILTIN_DETECTORS",
    "CandidatePattern",
    "builtin_patterns",
    "regex_pattern",
    "terms_pattern",
    "user_regex_problem",
]

_ALNUM = rb"[0-9A-Za-z]"
_WORD = rb"[0-9A-Za-z_]"
_B64URL = rb"[A-Za-z0-9_-]"


@dataclass(frozen=True, slots=True)
class CandidatePattern:
    """One candidate pattern. ``detector`` is the family a policy names, ``kind`` the format."""

    detector: str
    kind: str
    body: bytes
    before: bytes | None = None  # regex for a char that may not precede the value
    after: bytes | None = None  # regex for what may not follow the value
    caseless: bool = False
    validator: v.Validator | None = None
    # Hyperscan may scan a cheaper ``prefilter`` instead of ``body``: every match of the guarded
    # body must end where a prefilter match ends and start at most ``reach_back`` bytes before it.
    prefilter: bytes | None = None
    reach_back: int = 0
    # ``ends_before``: a class body X such that the ``after`` guard always fails on a byte in X
    # (its single-byte alternative). Hyperscan then only reports ends followed by ``[^X]`` or
    # the end of the data: one report per value instead of one per possible end (see scanner).
    ends_before: bytes | None = None
    # The shortest candidate the validator can accept, when longer than the regex's minimum.
    min_length: int = 0

    def hyperscan_expression(self) -> bytes:
        expr = self.prefilter or self.body
        if self.ends_before is None:
            return expr
        return b"(?:" + expr + b")(?:[^" + self.ends_before + b"]|$)"

    def python_regex(self) -> bytes:
        """The full expression for ``re``: guards around the body."""
        expr = b"(?:" + self.body + b")"
        if self.before is not None:
            expr = b"(?<!" + self.before + b")" + expr
        if self.after is not None:
            expr = expr + b"(?!" + self.after + b")"
        return expr


def _p(
    detector: str, kind: str, body: bytes, before: bytes | None, after: bytes | None, **kw: object
) -> CandidatePattern:
    return CandidatePattern(detector, kind, body, before, after, **kw)  # type: ignore[arg-type]


_PATTERNS: tuple[CandidatePattern, ...] = (
    # ---- secrets: most specific first (the order breaks ties between overlapping findings)
    _p(
        "secrets",
        "private_key",
        rb"-----BEGIN[A-Z ]{0,24} PRIVATE KEY-----[A-Za-z0-9+/=\r\n]*"
        rb"(-----END[A-Z ]{0,24} PRIVATE KEY-----)?",
        None,
        None,
        validator=v.valid_private_key,
    ),
    _p(
        "secrets",
        "aws_access_key",
        rb"(AKIA|ASIA|ABIA|ACCA)[A-Z2-7]{16}",
        _ALNUM,
        _ALNUM,
        validator=v.valid_aws_access_key,
    ),
    _p(
        "secrets",
        "aws_secret_key",
        rb"(aws_?)?secret_?access_?key[\"']?[ \t]*[:=][ \t]*[\"']?[A-Za-z0-9/+]{40}",
        _ALNUM,
        rb"[A-Za-z0-9/+]",
        caseless=True,
        validator=v.valid_aws_secret_key,
    ),
    _p(
        "secrets",
        "jwt",
        rb"eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{2,}\.[A-Za-z0-9_-]*",
        _B64URL,
        rb"[A-Za-z0-9_.-]",
        validator=v.valid_jwt,
    ),
    _p(
        "secrets",
        "openai_key",
        rb"sk-((proj|svcacct|admin)-)?[A-Za-z0-9_-]{20,}",
        _B64URL,
        _B64URL,
        validator=v.valid_openai_key,
    ),
    _p(
        "secrets",
        "github_token",
        rb"gh[pousr]_[A-Za-z0-9]{36}|github_pat_[A-Za-z0-9_]{82}",
        _WORD,
        _WORD,
        validator=v.valid_github_token,
    ),
    _p(
        "secrets",
        "slack_token",
        rb"xox[abprs]-[0-9A-Za-z-]{10,}",
        _WORD,
        rb"[0-9A-Za-z-]",
        validator=v.valid_slack_token,
    ),
    _p(
        "secrets",
        "slack_webhook",
        rb"(https://)?hooks\.slack\.com/services/T[A-Z0-9]{8,12}/B[A-Z0-9]{8,12}/[A-Za-z0-9]{24}",
        None,
        _ALNUM,
    ),
    _p(
        "secrets", "google_api_key", rb"AIza[0-9A-Za-z_-]{35}", _B64URL, _B64URL, validator=v.valid_google_key
    ),
    # ---- financial
    _p(
        "credit_card",
        "payment_card",
        rb"[0-9]([ -]?[0-9]){12,18}",
        rb"[0-9A-Za-z_.-]",
        rb"[0-9A-Za-z_]|[.,-][0-9]",
        ends_before=rb"0-9A-Za-z_",
        validator=v.valid_card,
    ),
    _p(
        "iban",
        "iban",
        rb"[A-Z]{2}[0-9]{2}( ?[A-Z0-9]{4}){2,7}( ?[A-Z0-9]{1,4})?",
        _ALNUM,
        _ALNUM,
        ends_before=rb"0-9A-Za-z",
        validator=v.valid_iban,
    ),
    # ---- national identifiers
    _p(
        "national_id",
        "us_ssn",
        rb"[0-9]{3}-[0-9]{2}-[0-9]{4}|[0-9]{3} [0-9]{2} [0-9]{4}",
        rb"[0-9A-Za-z-]",
        rb"[0-9A-Za-z]|-[0-9]",
        ends_before=rb"0-9A-Za-z",
        validator=v.valid_us_ssn,
    ),
    _p("national_id", "es_dni", rb"[0-9]{8}-?[A-Z]", _ALNUM, _ALNUM, validator=v.valid_es_dni),
    _p(
        "national_id",
        "it_codice_fiscale",
        rb"[A-Z]{6}[0-9LMNPQRSTUV]{2}[A-Z][0-9LMNPQRSTUV]{2}[A-Z][0-9LMNPQRSTUV]{3}[A-Z]",
        _ALNUM,
        _ALNUM,
        validator=v.valid_it_codice_fiscale,
    ),
    _p(
        "national_id",
        "br_cpf",
        rb"[0-9]{3}\.[0-9]{3}\.[0-9]{3}-[0-9]{2}",
        _ALNUM,
        rb"[0-9A-Za-z]|[.-][0-9]",
        validator=v.valid_br_cpf,
    ),
    # ---- contact data
    _p(
        "email",
        "email",
        rb"[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,24}",
        rb"[A-Za-z0-9._%+-]",
        rb"[A-Za-z0-9-]|\.[A-Za-z0-9]",
        ends_before=rb"A-Za-z0-9-",
        validator=v.valid_email,
        # An unbounded class before a literal is costly for Hyperscan on prose; the local part
        # is at most 64 bytes, so scanning from the ``@`` and reaching back 64 is equivalent.
        prefilter=rb"@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,24}",
        reach_back=64,
    ),
    _p(
        "ip_address",
        "ipv4",
        rb"[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}",
        rb"[0-9A-Za-z.:_-]",
        rb"[0-9A-Za-z_]|\.[0-9]",
        ends_before=rb"0-9A-Za-z_",
        validator=v.valid_ipv4,
    ),
    _p(
        "ip_address",
        "ipv6",
        rb"([0-9A-Fa-f]{1,4}|:)(:[0-9A-Fa-f]{0,4}){2,7}(:[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3})?"
        rb"|::([Ff]{4}:)?[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}",
        rb"[0-9A-Za-z:._-]",
        rb"[0-9A-Za-z:_]|\.[0-9]",
        min_length=6,  # three groups: a::b:c
        validator=v.valid_ipv6,
    ),
    _p(
        "phone",
        "phone",
        rb"\+[0-9]{1,3}[ .-]?(\([0-9]{1,4}\)[ .-]?)?[0-9]{1,4}([ .-]?[0-9]{2,4}){1,5}",
        rb"[0-9A-Za-z_.+/-]",
        rb"[0-9A-Za-z_]|[.-][0-9]",
        ends_before=rb"0-9A-Za-z_",
        min_length=9,  # + and at least 8 digits
        validator=v.valid_phone,
    ),
    _p(
        "phone",
        "phone",
        rb"(1[ .-])?(\([0-9]{3}\)[ .-]?|[0-9]{3}[ .-])[0-9]{3}[ .-]?[0-9]{4}",
        rb"[0-9A-Za-z_.+/-]",
        rb"[0-9A-Za-z_]|[.-][0-9]",
        ends_before=rb"0-9A-Za-z_",
        validator=v.valid_phone,
    ),
)

BUILTIN_DETECTORS: tuple[str, ...] = (
    "email",
    "phone",
    "credit_card",
    "iban",
    "national_id",
    "ip_address",
    "secrets",
)


def builtin_patterns(detectors: set[str] | frozenset[str]) -> list[CandidatePattern]:
    """The catalogue's patterns of the named families, in priority order."""
    return [p for p in _PATTERNS if p.detector in detectors]


# Constructs whose meaning differs between Hyperscan and ``re`` or at a scan-window edge.
_UNPORTABLE = (
    (rb"\b", "word boundaries (\\b)"),
    (rb"\B", "\\B"),
    (rb"\Z", "\\Z"),
    (rb"\z", "\\z"),
    (rb"\A", "\\A"),
    (rb"(?=", "lookahead"),
    (rb"(?!", "lookahead"),
    (rb"(?<", "lookbehind and named groups"),
    (rb"(?P", "named groups"),
    (rb"{,", "{,n} repeats"),
    (rb"[[:", "POSIX classes"),
)


def user_regex_problem(regex: str) -> str | None:
    """Why a user detector regex cannot be used (both engines must read it the same), or None."""
    raw = regex.encode()
    for needle, what in _UNPORTABLE:
        if needle in raw:
            return f"{what} are not supported in detector regexes"
    if re.search(rb"\\[1-9]", raw):
        return "backreferences are not supported in detector regexes"
    if re.search(rb"(?<![\\\[])\^", raw) or re.search(rb"(?<!\\)\$", raw):
        return "anchors (^, $) are not supported in detector regexes"
    try:
        compiled = re.compile(raw)
    except re.error as exc:
        return f"invalid regex: {exc}"
    if compiled.match(b""):
        return "the regex matches the empty string"
    return None


def regex_pattern(name: str, regex: str) -> CandidatePattern:
    """A user detector ``{name, regex}``: every match is a finding (no validation)."""
    return CandidatePattern(name, name, regex.encode())


def terms_pattern(name: str, terms: list[str]) -> CandidatePattern:
    """A user term list ``{name, terms}``: whole words, ASCII case-insensitive."""
    body = b"|".join(re.escape(t.encode()) for t in sorted(set(terms), key=len, reverse=True))
    return CandidatePattern(name, name, body, _WORD, _WORD, caseless=True)
