"""A labelled DLP corpus: true positives per detector and near-miss negatives.

Values are generated (seeded, so the corpus is the same on every run) with check digits
computed here, independently of the validators under test (Luhn, ISO 7064 mod 97, the DNI
letter table, the CPF digits, SSN issuance rules), then embedded in short sentences. Each
:class:`Sample` lists the (detector, value) pairs a correct scanner must report — none for a
near miss.
"""

from __future__ import annotations

import base64
import json
import random
import string
from dataclasses import dataclass

import phonenumbers
from stdnum.it import codicefiscale

__all__ = ["DETECTORS", "Sample", "corpus"]

DETECTORS = ("email", "phone", "credit_card", "iban", "national_id", "ip_address", "secrets")


@dataclass(frozen=True)
class Sample:
    text: str
    expected: tuple[tuple[str, str], ...]  # (detector, value)
    about: str  # the detector this sample was written for


_TEMPLATES = (
    "Please use {} for this.",
    "value: {}",
    "The customer wrote ({}) in the form.",
    "{}",
    "Here it is - {}, thanks!",
    'json-ish "field": "{}"',
    "line one\n{}\nline three",
)


def _embed(rng: random.Random, value: str) -> str:
    return rng.choice(_TEMPLATES).format(value)


def _pos(rng: random.Random, detector: str, values: list[str]) -> list[Sample]:
    return [Sample(_embed(rng, v), ((detector, v),), detector) for v in values]


def _neg(rng: random.Random, detector: str, values: list[str]) -> list[Sample]:
    return [Sample(_embed(rng, v), (), detector) for v in values]


# ---------------------------------------------------------------- check digits (independent)


def luhn_digit(partial: str) -> str:
    total = 0
    for i, ch in enumerate(reversed(partial)):
        d = int(ch)
        if i % 2 == 0:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return str((10 - total % 10) % 10)


def iban_check(country: str, bban: str) -> str:
    digits = "".join(str(int(c, 36)) for c in bban + country + "00")
    return f"{98 - int(digits) % 97:02d}"


def cpf_digits(nine: str) -> str:
    d = [int(c) for c in nine]
    first = sum(v * (10 - i) for i, v in enumerate(d)) * 10 % 11 % 10
    d.append(first)
    second = sum(v * (11 - i) for i, v in enumerate(d)) * 10 % 11 % 10
    return f"{first}{second}"


def _digits(rng: random.Random, n: int) -> str:
    return "".join(rng.choice(string.digits) for _ in range(n))


def _group(value: str, sizes: tuple[int, ...], sep: str) -> str:
    out, i = [], 0
    for s in sizes:
        if value[i : i + s]:
            out.append(value[i : i + s])
        i += s
    if i < len(value):
        out.append(value[i:])
    return sep.join(out)


# ---------------------------------------------------------------- per detector


def _emails(rng: random.Random) -> tuple[list[str], list[str]]:
    names = ["john.doe", "a.smith", "maria_garcia", "li.wei+news", "o'brien", "j", "dev-ops", "first.last99"]
    domains = [
        "example.com",
        "mail.example.org",
        "corp.example.co.uk",
        "uni-berlin.de",
        "x.io",
        "sub.domain.example.net",
    ]
    pos = []
    for _ in range(48):
        name = rng.choice(names).replace("'", "")
        pos.append(f"{name}{rng.randint(0, 999) if rng.random() < 0.5 else ''}@{rng.choice(domains)}")
    pos[0] = "John.Doe@Example.COM"
    neg = [
        "user@localhost",
        "icon@2x.png",
        "logo@3x.jpg",
        "a@b.c",
        "name@domain..com",
        "@handle",
        "user.@example.com",
        ".user@example.com",
        "john..doe@example.com",
        "foo@bar",
        "me@-example.com",
        "support at example dot com",
        "user@example.",
        "user@.example.com",
        "email me: @example.com",
        "style@media.css",
        "bundle@1.2.3.js",
        "x@y",
        "git@github",
        "user@ex_ample.com",
    ]
    neg += [f"{rng.choice(names)}@{_digits(rng, 3)}.{_digits(rng, 2)}" for _ in range(12)]
    neg += [f"{'a' * 70}@example.com", "npm install @scope/package", "@decorator.method()", "a@b@c"]
    neg += [f"user{i}@host{i}" for i in range(8)]
    return pos, neg


def _phones(rng: random.Random) -> tuple[list[str], list[str]]:
    regions = ["GB", "DE", "FR", "ES", "IT", "NL", "BE", "CH", "AT", "SE", "NO", "DK", "PL", "PT", "IE",
               "AU", "NZ", "JP", "IN", "BR", "MX", "ZA", "SG", "HK", "KR", "CA", "FI", "CZ", "IL", "AR"]  # fmt: skip
    pos = []
    for region in regions:
        number = phonenumbers.example_number_for_type(region, phonenumbers.PhoneNumberType.MOBILE)
        pos.append(phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.INTERNATIONAL))
    area_codes = ["212", "415", "617", "312", "206", "305", "512", "646", "718", "202"]
    fmts = [
        "({a}) {e}-{s}",
        "{a}-{e}-{s}",
        "{a}.{e}.{s}",
        "{a} {e} {s}",
        "+1 {a} {e} {s}",
        "1-{a}-{e}-{s}",
        "+1{a}{e}{s}",
    ]
    for i in range(20):
        a, e, s = rng.choice(area_codes), str(rng.randint(201, 989)), _digits(rng, 4)
        pos.append(fmts[i % len(fmts)].format(a=a, e=e, s=s))
    neg = [
        "2026-11-30",
        "12/31/2025",
        "10:30:45",
        "version 10.2.3",
        "555-1234",
        "call 867-5309",
        "123-456-7890",
        "(012) 345-6789",
        "94103-1234",
        "978-3-16-148410-0",
        "+1 23",
        "+0 123 456 789",
        "1999-2024",
        "3.14159",
        "42",
        "room 101",
        "tel: 12345",
        "4155552671",
        "Order 6175550143",
        "ticket 2125550198 closed",
    ]
    neg += [f"{rng.randint(1990, 2030)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}" for _ in range(12)]
    neg += [f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}" for _ in range(6)]
    neg += [f"v{rng.randint(1, 9)}.{rng.randint(0, 20)}.{rng.randint(0, 99)}" for _ in range(6)]
    return pos, neg


_CARD_PREFIXES = (
    ("4", 16),
    ("4", 13),
    ("4", 19),
    ("51", 16),
    ("55", 16),
    ("2221", 16),
    ("2720", 16),
    ("34", 15),
    ("37", 15),
    ("6011", 16),
    ("65", 16),
    ("3528", 16),
    ("36", 14),
    ("62", 16),
    ("6759", 16),
)


def _card(rng: random.Random, prefix: str, length: int) -> str:
    partial = prefix + _digits(rng, length - len(prefix) - 1)
    return partial + luhn_digit(partial)


def _cards(rng: random.Random) -> tuple[list[str], list[str]]:
    pos = ["4111111111111111", "4111 1111 1111 1111", "5500-0000-0000-0004", "3782 822463 10005"]
    for i in range(45):
        prefix, length = _CARD_PREFIXES[i % len(_CARD_PREFIXES)]
        number = _card(rng, prefix, length)
        style = i % 3
        if style == 1:
            number = _group(number, (4, 6, 5) if length == 15 else (4, 4, 4, 4), " ")
        elif style == 2 and length == 16:
            number = _group(number, (4, 4, 4, 4), "-")
        pos.append(number)
    neg = []
    for i in range(20):  # fails Luhn
        prefix, length = _CARD_PREFIXES[i % len(_CARD_PREFIXES)]
        good = _card(rng, prefix, length)
        bad = good[:-1] + str((int(good[-1]) + 1 + i % 8) % 10)
        neg.append(_group(bad, (4, 4, 4, 4), " ") if i % 2 else bad)
    for _ in range(8):  # Luhn-valid but no known issuer
        neg.append(_card(rng, rng.choice(["1", "7", "8", "9"]), 16))
    for _ in range(6):  # Luhn-valid Visa prefix, wrong length
        neg.append(_card(rng, "4", rng.choice([14, 15, 17, 18])))
    neg += [
        "4111-1111 1111-1111",
        "4111 1111 1111 1111 0",
        "0000 0000 0000 0000",
        "ID-4111111111111111",
        "41111111111111111111111",
        "1234 5678 9012 3456",
        "C4",
        "S3",
        "ORDER-2024-000123456",
        "4111111111111111.5",
    ]
    return pos, neg


_IBAN_FORMATS = {
    "DE": "n18",
    "GB": "a4n14",
    "AT": "n16",
    "CH": "n17",
    "PL": "n24",
    "SE": "n20",
    "DK": "n14",
    "NO": "n11",
    "FI": "n14",
    "IE": "a4n14",
    "LU": "n16",
    "CZ": "n20",
}


def _bban(rng: random.Random, fmt: str) -> str:
    out = ""
    i = 0
    while i < len(fmt):
        kind = fmt[i]
        j = i + 1
        while j < len(fmt) and fmt[j].isdigit():
            j += 1
        n = int(fmt[i + 1 : j])
        out += "".join(rng.choice(string.ascii_uppercase if kind == "a" else string.digits) for _ in range(n))
        i = j
    return out


def _ibans(rng: random.Random) -> tuple[list[str], list[str]]:
    from stdnum import iban as std_iban

    pos: list[str] = ["DE89 3704 0044 0532 0130 00", "GB82WEST12345698765432"]
    neg: list[str] = []
    countries = list(_IBAN_FORMATS)
    while len(pos) < 48:
        country = countries[len(pos) % len(countries)]
        bban = _bban(rng, _IBAN_FORMATS[country])
        iban = country + iban_check(country, bban) + bban
        if not std_iban.is_valid(iban):  # a country-specific account check digit failed: skip
            continue
        pos.append(_group(iban, (4,) * 8, " ") if len(pos) % 2 else iban)
        if len(neg) < 24:
            wrong = iban[:2] + f"{(int(iban[2:4]) + 1) % 97 + 2:02d}" + iban[4:]
            neg.append(_group(wrong, (4,) * 8, " ") if len(neg) % 2 else wrong)
    for _ in range(10):
        bban = _bban(rng, "n18")
        neg.append("XX" + iban_check("XX", bban) + bban)
    neg += ["DE89 3704 0044 0532 0130", "DE8937040044053201300", "GB82 WEST 1234", "AB12 CDEF 3456"]
    neg += ["ISO 13616 defines IBAN", "HTTP2 SERVER CONFIG", "US10 PLAN", "RFC7231 SECTION 6"]
    return pos, neg


def _ssn_area(rng: random.Random) -> int:
    while True:
        area = rng.randint(1, 899)
        if area != 666:
            return area


def _national(rng: random.Random) -> tuple[list[str], list[str]]:
    pos: list[str] = []
    for i in range(24):
        ssn = f"{_ssn_area(rng):03d}-{rng.randint(1, 99):02d}-{rng.randint(1, 9999):04d}"
        pos.append(ssn.replace("-", " ") if i % 4 == 3 else ssn)
    letters = "TRWAGMYFPDXBNJZSQVHLCKE"
    for _ in range(8):
        n = _digits(rng, 8)
        pos.append(n + letters[int(n) % 23])
    for _ in range(8):
        nine = _digits(rng, 9)
        d = nine + cpf_digits(nine)
        pos.append(f"{d[:3]}.{d[3:6]}.{d[6:9]}-{d[9:]}")
    for base in ("RSSMRA85T10A562", "BNCGNN80A01H501", "VRDLGU70C41F205", "MRARSS90D15L219"):
        pos.append(base + codicefiscale.calc_check_digit(base))
    neg = ["000-12-3456", "666-12-3456", "912-34-5678", "123-00-4567", "123-45-0000", "078-05-1120"]
    neg += [f"9{_digits(rng, 2)}-{rng.randint(1, 99):02d}-{rng.randint(1, 9999):04d}" for _ in range(8)]
    neg += [f"{_ssn_area(rng):03d}-00-{rng.randint(1, 9999):04d}" for _ in range(6)]
    for _ in range(8):
        n = _digits(rng, 8)
        neg.append(n + letters[(int(n) + 1) % 23])
    for _ in range(8):
        nine = _digits(rng, 9)
        good = cpf_digits(nine)
        bad = f"{(int(good[0]) + 1) % 10}{good[1]}"
        neg.append(f"{nine[:3]}.{nine[3:6]}.{nine[6:9]}-{bad}")
    neg += ["RSSMRA85T10A562X", "123-45-67890", "12-345-6789", "1234-56-789", "call 555-12-345"]
    return pos, neg


def _ips(rng: random.Random) -> tuple[list[str], list[str]]:
    pos = [
        f"{rng.randint(1, 223)}.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"
        for _ in range(30)
    ]
    pos += ["10.0.0.1", "192.168.1.20", "172.16.254.3", "8.8.8.8", "1.2.3.4"]
    for _ in range(12):
        groups = [f"{rng.randint(0, 65535):x}" for _ in range(8)]
        pos.append(
            ":".join(groups) if rng.random() < 0.5 else ":".join(groups[:3]) + "::" + ":".join(groups[6:])
        )
    pos += ["2001:db8::8a2e:370:7334", "fe80::1ff:fe23:4567:890a", "::ffff:192.0.2.128"]
    neg = [
        f"{rng.randint(256, 999)}.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(0, 255)}"
        for _ in range(8)
    ]
    neg += [f"{rng.randint(1, 9)}.{rng.randint(0, 9)}.{rng.randint(0, 9)}" for _ in range(8)]
    neg += [
        f"v{rng.randint(1, 9)}.{rng.randint(0, 9)}.{rng.randint(0, 9)}.{rng.randint(0, 9)}" for _ in range(6)
    ]
    neg += [
        f"{rng.randint(1, 9)}.{rng.randint(0, 9)}.{rng.randint(0, 9)}.{rng.randint(0, 9)}.{rng.randint(0, 9)}"
        for _ in range(6)
    ]
    neg += ["01.02.03.04", "0.0.0.0", "::1", "::", "std::vector", "a::b", "12:30:45", "00:1A:2B:3C:4D:5E"]
    neg += ["1.2.3.4a", "Foo::Bar::baz", "10:30", "2001:db8", "ab:cd:ef:gh:ij", "3.14.15.92.65", "1..2.3.4"]
    return pos, neg


def _b64(rng: random.Random, n: int, alphabet: str = string.ascii_letters + string.digits) -> str:
    """Random characters that mix upper, lower and digits whenever the alphabet has them."""
    need = [
        cls
        for cls in (string.digits, string.ascii_uppercase, string.ascii_lowercase)
        if set(cls) & set(alphabet)
    ]
    for _ in range(1000):
        value = "".join(rng.choice(alphabet) for _ in range(n))
        if all(set(cls) & set(value) for cls in need):
            return value
    raise AssertionError("could not generate a mixed value")


def _jwt(rng: random.Random) -> str:
    def enc(obj: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    header = enc({"alg": rng.choice(["HS256", "RS256", "ES256"]), "typ": "JWT"})
    payload = enc({"sub": _digits(rng, 8), "name": "Jane", "iat": 1700000000 + rng.randint(0, 10**6)})
    return f"{header}.{payload}.{_b64(rng, 43, string.ascii_letters + string.digits + '-_')}"


def _secrets(rng: random.Random) -> tuple[list[str], list[str]]:
    upper32 = string.ascii_uppercase + "234567"
    pos: list[str] = []
    for _ in range(8):
        pos.append(rng.choice(["AKIA", "ASIA"]) + "".join(rng.choice(upper32) for _ in range(16)))
    for _ in range(5):
        pos.append(_jwt(rng))
    for _ in range(5):
        pos.append("sk-proj-" + _b64(rng, rng.randint(48, 120), string.ascii_letters + string.digits + "_-"))
    for _ in range(3):
        pos.append("sk-" + _b64(rng, 20) + "T3BlbkFJ" + _b64(rng, 20))
    for _ in range(5):
        pos.append("ghp_" + _b64(rng, 36))
    pos.append("github_pat_" + _b64(rng, 82, string.ascii_letters + string.digits + "_"))
    for _ in range(4):
        pos.append(f"xoxb-{_digits(rng, 12)}-{_digits(rng, 13)}-{_b64(rng, 24)}")
    for _ in range(5):
        pos.append("AIza" + _b64(rng, 35, string.ascii_letters + string.digits + "_-"))
    for _ in range(3):
        body = "\n".join(_b64(rng, 64, string.ascii_letters + string.digits + "+/") for _ in range(3))
        kind = rng.choice(["RSA ", "EC ", "", "OPENSSH "])
        pos.append(f"-----BEGIN {kind}PRIVATE KEY-----\n{body}\n-----END {kind}PRIVATE KEY-----")
    pos.append(
        f"https://hooks.slack.com/services/T{_b64(rng, 9, upper32)}/B{_b64(rng, 9, upper32)}/{_b64(rng, 24)}"
    )
    neg = [
        "sk-learn-style-classification-model",
        "sk-this-is-not-a-real-key-at-all",
        "AKIA" + "".join(rng.choice(upper32) for _ in range(15)),
        "akiaiosfodnn7example",
        "AKIAAAAAAAAAAAAAAAAA",
        "eyJub3QiOiJhIGp3dCJ9.eyJzdWIiOiIxIn0.abcdefghij",
        "eyJhbGciOi.broken.token",
        "ghp_short",
        "ghp_" + "a" * 36,
        "xoxb-short",
        "AIza" + _b64(rng, 20),
        "-----BEGIN PUBLIC KEY-----",
        "-----BEGIN CERTIFICATE-----",
        "da39a3ee5e6b4b0d3255bfef95601890afd80709",
        "550e8400-e29b-41d4-a716-446655440000",
        "sk-" + "x" * 30,
        "task-proj-" + _b64(rng, 40),
        "github_pat_short",
        "my secret_key is hunter2",
        "xoxp",
    ]
    neg += [_b64(rng, 40, string.ascii_letters + string.digits + "/+") for _ in range(8)]
    neg += [f"{rng.choice(['sha256', 'md5'])}:{_b64(rng, 32, '0123456789abcdef')}" for _ in range(6)]
    neg += [f"-----BEGIN {k}-----" for k in ("CERTIFICATE REQUEST", "X509 CRL", "PGP PUBLIC KEY BLOCK")]
    neg += ["AIzaSy", "gho_", "ghs_notatoken", "sk-proj-", "Bearer token-goes-here"]
    return pos, neg


_GENERATORS = {
    "email": _emails,
    "phone": _phones,
    "credit_card": _cards,
    "iban": _ibans,
    "national_id": _national,
    "ip_address": _ips,
    "secrets": _secrets,
}


def corpus(seed: int = 7) -> list[Sample]:
    """Every sample, in a fixed order."""
    rng = random.Random(seed)
    samples: list[Sample] = []
    for detector, make in _GENERATORS.items():
        pos, neg = make(rng)
        samples += _pos(rng, detector, pos)
        samples += _neg(rng, detector, neg)
    # Mixed sentences: several detectors in one text.
    mixed = (
        "Ship to jane.roe@example.org, phone +44 20 7946 0958, card 4242 4242 4242 4242, "
        "IBAN GB82 WEST 1234 5698 7654 32, SSN 219-09-9998, from 203.0.113.7."
    )
    samples.append(
        Sample(
            mixed,
            (
                ("email", "jane.roe@example.org"),
                ("phone", "+44 20 7946 0958"),
                ("credit_card", "4242 4242 4242 4242"),
                ("iban", "GB82 WEST 1234 5698 7654 32"),
                ("national_id", "219-09-9998"),
                ("ip_address", "203.0.113.7"),
            ),
            "mixed",
        )
    )
    return samples
