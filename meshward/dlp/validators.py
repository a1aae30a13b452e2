"""Validation of DLP candidates: is this regex hit really a card, an IBAN, a phone number, a key?

The scanner finds *candidates* with cheap patterns; each candidate is confirmed here by the
rules of its format (check digits, issuer ranges, registries of valid ranges, structure), so a
16-digit number that fails Luhn, ``C4`` or ``S3`` is never reported. Every validator takes the
candidate bytes and returns the span of the confirmed value inside it (``(0, len)`` usually, a
narrower span when only part of the candidate is the secret), or ``None``.

Pure functions, no I/O; they run only on candidates, never on the whole body. On the hot path
a few checks are done here rather than through the library that defines them, because the
library call dominated the scan (``bench.dlp``): Luhn, the IBAN mod-97 and structure (the
structure and country rules still come from ``python-stdnum``'s registry), dotted quads, SSN
rules (with ``python-stdnum``'s list of published numbers) and the phone-number parse (the
validity decision stays ``phonenumbers``'s ``is_valid_number``).
``tests/dlp/test_validators.py`` checks each against its library on generated inputs.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import re
from collections.abc import Callable
from functools import lru_cache
from typing import Any

import phonenumbers
from stdnum import iban as std_iban
from stdnum.br import cpf as br_cpf
from stdnum.es import dni as es_dni
from stdnum.it import codicefiscale as it_cf
from stdnum.us import ssn as us_ssn

__all__ = [
    "Validator",
    "card_issuer",
    "luhn_ok",
    "valid_aws_access_key",
    "valid_aws_secret_key",
    "valid_br_cpf",
    "valid_card",
    "valid_email",
    "valid_es_dni",
    "valid_github_token",
    "valid_google_key",
    "valid_iban",
    "valid_ipv4",
    "valid_ipv6",
    "valid_it_codice_fiscale",
    "valid_jwt",
    "valid_openai_key",
    "valid_phone",
    "valid_private_key",
    "valid_slack_token",
    "valid_us_ssn",
]

Span = tuple[int, int]
Validator = Callable[[bytes], Span | None]

# ---------------------------------------------------------------- email

# File names such as ``icon@2x.png`` look like addresses; these are not top-level domains.
_FILE_EXTENSIONS = frozenset(
    b"png jpg jpeg gif svg webp bmp ico tif tiff css js mjs ts tsx jsx map json yaml yml txt log".split()
)


def valid_email(value: bytes) -> Span | None:
    """RFC 5321 length limits, no empty or doubled dots, a real-looking alphabetic TLD."""
    local, _, domain = value.rpartition(b"@")
    if not local or len(local) > 64 or len(value) > 254:
        return None
    if local[0] == 0x2E or local[-1] == 0x2E or b".." in local:
        return None
    labels = domain.split(b".")
    if len(labels) < 2 or labels[-1].lower() in _FILE_EXTENSIONS:
        return None
    for label in labels:
        if not label or len(label) > 63 or label[0] == 0x2D or label[-1] == 0x2D:
            return None
    return (0, len(value))


# ---------------------------------------------------------------- phone


def _valid_number(number: phonenumbers.PhoneNumber) -> bool:
    """``phonenumbers.is_valid_number``, trying the country code's main region first.

    ``is_valid_number`` looks for the number's region among every region sharing the country
    code (25 for +1) before validating it there; the main region is the first it tries, so a
    number valid there is valid, and only the others pay the full search."""
    regions = phonenumbers.COUNTRY_CODE_TO_REGION_CODE.get(number.country_code or 0, ())
    if len(regions) > 1 and phonenumbers.is_valid_number_for_region(number, regions[0]):
        return True
    return bool(phonenumbers.is_valid_number(number))


def valid_phone(value: bytes) -> Span | None:
    """A number ``phonenumbers`` calls valid.

    International numbers need a leading ``+``; national numbers are read as US (NANP) numbers
    and must be written with separators or parentheses (a bare run of 10 digits is too often an
    order or account number to be called a phone number), and at least 8 digits are needed.
    The digits are split into country code and national number here (what
    ``phonenumbers.parse`` does for these simple written forms, at a fifth of its cost); only
    an international candidate that fails this way is parsed in full.
    """
    digits = bytes(b for b in value if 0x30 <= b <= 0x39).decode()
    international = value[:1] == b"+"
    if international:
        if not 8 <= len(digits) <= 15 or digits[0] == "0":
            return None
        for width in (1, 2, 3):
            country_code = int(digits[:width])
            if country_code in phonenumbers.COUNTRY_CODE_TO_REGION_CODE:
                national = digits[width:]
                break
        else:
            return None
    else:
        if len(digits) == 11 and digits[0] == "1":
            digits = digits[1:]
        if len(digits) != 10 or value.isdigit():
            return None
        country_code, national = 1, digits
    number = phonenumbers.PhoneNumber(country_code=country_code, national_number=int(national))
    zeros = len(national) - len(national.lstrip("0"))
    if zeros:
        number.italian_leading_zero = True
        number.number_of_leading_zeros = zeros if zeros > 1 else None
    if _valid_number(number):
        return (0, len(value))
    if international:  # written forms the split above does not cover (a trunk prefix after +1)
        try:
            parsed = phonenumbers.parse(value.decode("ascii"), None)
        except phonenumbers.NumberParseException:
            return None
        if phonenumbers.is_valid_number(parsed):
            return (0, len(value))
    return None


# ---------------------------------------------------------------- payment cards

# (low, high, prefix digits, allowed lengths): published issuer identification number ranges.
_IIN_RANGES: tuple[tuple[int, int, int, frozenset[int], str], ...] = (
    (4, 4, 1, frozenset({13, 16, 19}), "visa"),
    (51, 55, 2, frozenset({16}), "mastercard"),
    (2221, 2720, 4, frozenset({16}), "mastercard"),
    (34, 34, 2, frozenset({15}), "amex"),
    (37, 37, 2, frozenset({15}), "amex"),
    (6011, 6011, 4, frozenset(range(16, 20)), "discover"),
    (644, 649, 3, frozenset(range(16, 20)), "discover"),
    (65, 65, 2, frozenset(range(16, 20)), "discover"),
    (300, 305, 3, frozenset(range(14, 20)), "diners"),
    (36, 36, 2, frozenset(range(14, 20)), "diners"),
    (38, 39, 2, frozenset(range(16, 20)), "diners"),
    (3528, 3589, 4, frozenset(range(16, 20)), "jcb"),
    (62, 62, 2, frozenset(range(16, 20)), "unionpay"),
    (2200, 2204, 4, frozenset(range(16, 20)), "mir"),
    (5018, 5018, 4, frozenset(range(12, 20)), "maestro"),
    (5020, 5020, 4, frozenset(range(12, 20)), "maestro"),
    (5038, 5038, 4, frozenset(range(12, 20)), "maestro"),
    (5893, 5893, 4, frozenset(range(12, 20)), "maestro"),
    (6304, 6304, 4, frozenset(range(12, 20)), "maestro"),
    (6759, 6759, 4, frozenset(range(12, 20)), "maestro"),
    (6761, 6763, 4, frozenset(range(12, 20)), "maestro"),
)


_DOUBLED = (0, 2, 4, 6, 8, 1, 3, 5, 7, 9)


def luhn_ok(digits: str) -> bool:
    """The Luhn (mod 10) check digit is right."""
    total = 0
    odd = False
    for ch in reversed(digits):
        n = ord(ch) - 48
        total += _DOUBLED[n] if odd else n
        odd = not odd
    return total % 10 == 0


# The same ranges on a common scale (the first four digits), for one ``int`` per candidate.
_IIN_SCALED = tuple(
    (low * 10 ** (4 - width), (high + 1) * 10 ** (4 - width), lengths, name)
    for low, high, width, lengths, name in _IIN_RANGES
)


def card_issuer(digits: str) -> str | None:
    """The card network whose IIN range and length fit ``digits`` (digits only), or None."""
    prefix = int(digits[:4])
    size = len(digits)
    for low, high, lengths, name in _IIN_SCALED:
        if low <= prefix < high and size in lengths:
            return name
    return None


def valid_card(value: bytes) -> Span | None:
    """Known IIN range and length, Luhn check digit, one consistent separator in card groups."""
    text = value.decode("ascii")  # the pattern allows only digits, " " and "-"
    digits = text.replace(" ", "").replace("-", "")
    if len(digits) != len(text):
        if " " in text and "-" in text:
            return None
        groups = [len(g) for g in text.split(" " if " " in text else "-")]
        if not (all(g == 4 for g in groups[:-1]) or groups in ([4, 6, 5], [4, 6, 4])):
            return None
    if card_issuer(digits) is None or digits.count(digits[0]) == len(digits):
        return None
    return (0, len(value)) if luhn_ok(digits) else None


# ---------------------------------------------------------------- IBAN and national IDs


_IBAN_STRUCTURE = re.compile(r"([1-9][0-9]*)!([nac])")
_IBAN_CLASSES = {"n": "[0-9]", "a": "[A-Z]", "c": "[A-Za-z0-9]"}


@lru_cache(maxsize=256)
def _iban_country(country: str) -> tuple[re.Pattern[str] | None, Any]:
    """The BBAN structure (from ``python-stdnum``'s IBAN registry) and national check module."""
    info = std_iban._ibandb.info(country + "00")
    props = info[0][1] if info and info[0][0] == country else {}
    if not props or "bban" not in props:
        return None, None
    structure = _IBAN_STRUCTURE.sub(lambda m: f"{_IBAN_CLASSES[m.group(2)]}{{{m.group(1)}}}", props["bban"])
    return re.compile(structure), std_iban._get_cc_module(country)


def _iban_ok(compact: str) -> bool:
    if len(compact) < 15 or not compact[2:4].isdigit():
        return False
    rearranged = compact[4:] + compact[:4]
    if int("".join(str(int(c, 36)) for c in rearranged)) % 97 != 1:
        return False
    bban, module = _iban_country(compact[:2])
    if bban is None or not bban.fullmatch(compact[4:]):
        return False
    return module is None or bool(module.is_valid(compact))


def valid_iban(value: bytes) -> Span | None:
    """ISO 13616: mod-97 check digits, the country's BBAN length and format, national checks.

    The candidate pattern is greedy over space-separated groups; when the whole candidate
    fails, up to three trailing groups are dropped (``DE89 3704 0044 0532 0130 00 2024``).
    """
    end = len(value)
    for _ in range(4):
        if _iban_ok(value[:end].decode("ascii").replace(" ", "")):
            return (0, end)
        end = value.rfind(b" ", 0, end)
        if end <= 0:
            return None
    return None


_SSN_PUBLISHED: frozenset[str] = frozenset(us_ssn._ssn_blacklist)


def valid_us_ssn(value: bytes) -> Span | None:
    """US SSN rules: no area 000/666/9xx, group 00, serial 0000, nor a known published number."""
    text = value.decode("ascii")
    area, group, serial = text[0:3], text[4:6], text[7:11]
    if area in ("000", "666") or area[0] == "9" or group == "00" or serial == "0000":
        return None
    return None if f"{area}-{group}-{serial}" in _SSN_PUBLISHED else (0, len(value))


def valid_es_dni(value: bytes) -> Span | None:
    return (0, len(value)) if es_dni.is_valid(value.decode("ascii")) else None


def valid_it_codice_fiscale(value: bytes) -> Span | None:
    return (0, len(value)) if it_cf.is_valid(value.decode("ascii")) else None


def valid_br_cpf(value: bytes) -> Span | None:
    return (0, len(value)) if br_cpf.is_valid(value.decode("ascii")) else None


# ---------------------------------------------------------------- IP addresses


def valid_ipv4(value: bytes) -> Span | None:
    """A dotted quad ``ipaddress`` would accept (no octet > 255, no leading zeros), not 0.0.0.0.

    The pattern guarantees four runs of 1-3 digits."""
    octets = value.split(b".")
    for octet in octets:
        if (len(octet) > 1 and octet[0] == 0x30) or int(octet) > 255:
            return None
    return None if value == b"0.0.0.0" else (0, len(value))


def valid_ipv6(value: bytes) -> Span | None:
    """An address ``ipaddress`` accepts with at least three hex groups (``::1``, ``a::b`` are not)."""
    try:
        address = ipaddress.IPv6Address(value.decode("ascii"))
    except ValueError:
        return None
    groups = sum(1 for g in value.split(b":") if g)
    if address.is_unspecified or (groups < 3 and b"." not in value):
        return None
    return (0, len(value))


# ---------------------------------------------------------------- secrets


def _has_classes(value: bytes, need: int) -> bool:
    """At least ``need`` of: lower-case letter, upper-case letter, digit (random-looking)."""
    classes = (
        any(0x61 <= b <= 0x7A for b in value),
        any(0x41 <= b <= 0x5A for b in value),
        any(0x30 <= b <= 0x39 for b in value),
    )
    return sum(classes) >= need


def valid_aws_access_key(value: bytes) -> Span | None:
    """``AKIA``/``ASIA``… + 16 upper-case base32 characters, not a repeated filler."""
    body = value[4:]
    return (0, len(value)) if len(set(body)) >= 6 else None


def valid_aws_secret_key(value: bytes) -> Span | None:
    """``aws_secret_access_key = <40 chars>``: only the 40-character value is the secret."""
    secret = value[-40:]
    return (len(value) - 40, len(value)) if _has_classes(secret, 3) else None


def valid_private_key(value: bytes) -> Span | None:
    """A PEM ``-----BEGIN … PRIVATE KEY-----`` header (and its body, when it is in view)."""
    return (0, len(value))


def valid_jwt(value: bytes) -> Span | None:
    """Three base64url parts whose first decodes to a JSON object with an ``alg``."""
    header = value.split(b".", 1)[0]
    try:
        decoded = json.loads(base64.urlsafe_b64decode(header + b"=" * (-len(header) % 4)))
    except (binascii.Error, ValueError):
        return None
    return (0, len(value)) if isinstance(decoded, dict) and isinstance(decoded.get("alg"), str) else None


def valid_openai_key(value: bytes) -> Span | None:
    """``sk-`` / ``sk-proj-`` / ``sk-svcacct-`` / ``sk-admin-`` keys: a random-looking body.

    Legacy keys carry the ``T3BlbkFJ`` marker; otherwise the body must mix upper, lower and
    digits, which words such as ``sk-learn-style-classifier`` never do.
    """
    body = value[3:]
    if b"T3BlbkFJ" in body:
        return (0, len(value))
    return (0, len(value)) if len(body) >= 32 and _has_classes(body, 3) else None


def valid_github_token(value: bytes) -> Span | None:
    body = value.split(b"_", 1)[1] if value.startswith(b"gh") else value[len(b"github_pat_") :]
    return (0, len(value)) if _has_classes(body, 2) and len(set(body)) >= 8 else None


def valid_slack_token(value: bytes) -> Span | None:
    body = value[5:]
    return (0, len(value)) if any(0x30 <= b <= 0x39 for b in body) and len(set(body)) >= 6 else None


def valid_google_key(value: bytes) -> Span | None:
    body = value[4:]
    return (0, len(value)) if _has_classes(body, 2) and len(set(body)) >= 8 else None
