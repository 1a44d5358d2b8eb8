"""``normalize`` answers exactly as email-validator does, with or without its domain cache.

The cache skips the validator for a plain local part at a domain it already passed; these
tests hold it to the validator's own answer (the stored address, or a refusal) on the
awkward cases: RFC 2142 names, internationalised and punycode domains, special-use and
numeric top-level domains, label and address length limits, quoting and display names.
"""

from __future__ import annotations

import itertools
import random

import pytest
from email_validator import EmailNotValidError, validate_email

from mailer.errors import InvalidAddress
from subscribers import addresses
from subscribers.addresses import normalize

LOCALS = [
    "a", "Ada.Lovelace", "x+tag", "o'neil", "a!#$%&'*+-/=?^_`{|}~z", "PostMaster", "ABUSE",
    "info", "infos", "a" * 64, "b" * 65, "a..b", ".a", "a.", '"quoted"', '"a@b"', "ünï",
    "a b", "", "Bob <bob",
]  # fmt: skip
DOMAINS = [
    "example.org", "EXAMPLE.Org", "mail.example.co.uk", "bücher.de", "xn--bcher-kva.de",
    "foo.test", "x.local", "localhost", "a.123", "-a.org", "a-.org", "a--b.org",
    "xn--zz.org", "example.org.", ".example.org", "exa_mple.org", "[127.0.0.1]",
    ("a" * 63) + ".org", ("a" * 64) + ".org", ".".join(["abcdefghi"] * 24) + ".org",
    ".".join(["abcdefghi"] * 25) + ".org", "b@example.org", "",
]  # fmt: skip


def validator(address: str) -> str | None:
    """What email-validator alone makes of an address: the stored form, or None."""
    candidate = address.strip()
    if not candidate or len(candidate) > addresses.MAX_LENGTH:
        return None
    try:
        valid = validate_email(candidate, check_deliverability=False, allow_smtputf8=False)
    except EmailNotValidError:
        return None
    return valid.ascii_email or valid.normalized


def ours(address: str) -> str | None:
    try:
        return normalize(address)
    except InvalidAddress:
        return None


@pytest.mark.parametrize("warm", [False, True], ids=["cold cache", "warm cache"])
def test_normalize_agrees_with_the_validator(warm: bool) -> None:
    addresses._domain.cache_clear()
    corpus = [f"{local}@{domain}" for local, domain in itertools.product(LOCALS, DOMAINS)]
    corpus += ["no-at-sign", "two@@example.org", "a@b@example.org", " Ada@Example.org "]
    random.Random(5).shuffle(corpus)
    if warm:
        for domain in DOMAINS:
            ours(f"warm@{domain}")
    for address in corpus:
        assert ours(address) == validator(address), address
    if warm:  # the shortcut really ran: passed domains are in the cache
        assert addresses._domain.cache_info().hits > 0


def test_lengths_at_the_limit_agree() -> None:
    """The address limit is counted on every form the validator checks: typed, Unicode and
    ASCII (punycode is longer than the Unicode name it spells)."""
    for domain in ("example.org", "bücher.de", "xn--bcher-kva.de"):
        ours(f"warm@{domain}")
        for size in range(230, 256):
            local = "a" * (size - len(domain) - 1)
            address = f"{local}@{domain}"
            assert ours(address) == validator(address), (size, domain)
