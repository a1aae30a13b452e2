"""The hot-path validators agree with the libraries that define the formats."""

from __future__ import annotations

import ipaddress
import random

import phonenumbers
from hypothesis import given, settings
from hypothesis import strategies as st
from stdnum import iban as std_iban
from stdnum import luhn
from stdnum.us import ssn

from meshward.dlp import validators as v
from tests.dlp.corpus import _IBAN_FORMATS, _bban, iban_check

digits = st.text(alphabet="0123456789", min_size=1, max_size=19)


@settings(max_examples=500, deadline=None)
@given(digits)
def test_luhn_matches_stdnum(number: str) -> None:
    assert v.luhn_ok(number) == luhn.is_valid(number)


@settings(max_examples=500, deadline=None)
@given(st.lists(st.text(alphabet="0123456789", min_size=1, max_size=3), min_size=4, max_size=4))
def test_dotted_quads_match_ipaddress(octets: list[str]) -> None:
    text = ".".join(octets)
    try:
        expected = not ipaddress.IPv4Address(text).is_unspecified
    except ValueError:
        expected = False
    assert (v.valid_ipv4(text.encode()) is not None) == expected


@settings(max_examples=500, deadline=None)
@given(st.from_regex(r"\A[0-9]{3}-[0-9]{2}-[0-9]{4}\Z"))
def test_ssn_rules_match_stdnum(number: str) -> None:
    assert (v.valid_us_ssn(number.encode()) is not None) == ssn.is_valid(number)


def test_published_ssns_are_refused() -> None:
    assert v.valid_us_ssn(b"078-05-1120") is None and v.valid_us_ssn(b"219-09-9999") is None


def test_iban_matches_stdnum_on_valid_mutated_and_foreign_numbers() -> None:
    rng = random.Random(5)
    countries = [*_IBAN_FORMATS, "FR", "ES", "IT", "BE", "NL", "XX", "QQ"]
    for _ in range(600):
        country = rng.choice(countries)
        bban = _bban(rng, _IBAN_FORMATS.get(country, rng.choice(["n18", "a4n10", "n23"])))
        number = country + iban_check(country, bban) + bban
        if rng.random() < 0.4:  # mutate one character
            i = rng.randrange(2, len(number))
            number = number[:i] + rng.choice("0123456789ABC") + number[i + 1 :]
        assert (v.valid_iban(number.encode()) is not None) == std_iban.is_valid(number), number


def _library_phone(text: str) -> bool:
    try:
        number = phonenumbers.parse(text, None if text.startswith("+") else "US")
    except phonenumbers.NumberParseException:
        return False
    return bool(phonenumbers.is_valid_number(number))


def test_phone_matches_phonenumbers_on_example_and_random_numbers() -> None:
    rng = random.Random(9)
    samples = []
    for region in sorted(phonenumbers.SUPPORTED_REGIONS):
        for kind in (phonenumbers.PhoneNumberType.MOBILE, phonenumbers.PhoneNumberType.FIXED_LINE):
            example = phonenumbers.example_number_for_type(region, kind)
            if example is not None:
                samples.append(
                    phonenumbers.format_number(example, phonenumbers.PhoneNumberFormat.INTERNATIONAL)
                )
    for _ in range(300):
        samples.append("+" + "".join(rng.choice("0123456789") for _ in range(rng.randint(8, 14))))
    for _ in range(300):
        a, e, s = rng.randint(100, 999), rng.randint(100, 999), rng.randint(0, 9999)
        samples.append(rng.choice([f"({a}) {e}-{s:04d}", f"{a}-{e}-{s:04d}", f"1-{a}-{e}-{s:04d}"]))
    # Documented difference: fewer than 8 digits is never a phone number for the detector.
    samples = [t for t in samples if sum(c.isdigit() for c in t) >= 8]
    disagreements = [t for t in samples if (v.valid_phone(t.encode()) is not None) != _library_phone(t)]
    assert disagreements == []
