"""The SMTP path's own DKIM signer (``cryptography``'s RSA) against dkimpy's verifier, on
the whitespace relaxed canonicalization is about."""

from __future__ import annotations

import re

import dkim
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from mailer.delivery.dkim import DkimKey
from tests.test_dkim import write_key

MESSAGES = {
    "plain": b"From: a@example.org\r\nTo: b@example.net\r\nSubject: hi\r\n\r\nhello\r\n",
    "whitespace": (
        b"From:  Ann \t <a@example.org> \r\nTo: b@example.net\r\nSubject: a\r\n\tfolded  one\r\n"
        b"List-Id: <l.example.org>\r\n\r\nline  with \t runs \r\ntrailing \t\r\n\r\n \r\n\r\n"
    ),
    "repeated": (
        b"From: a@example.org\r\nTo: b@example.net\r\nTo: c@example.net\r\n"
        b"Subject: s\r\n\r\nbody without a final line end"
    ),
    "empty-body": b"From: a@example.org\r\nSubject: s\r\n\r\n",
}


@pytest.fixture(scope="module")
def key(tmp_path_factory: pytest.TempPathFactory) -> DkimKey:
    path = tmp_path_factory.mktemp("dkim") / "key.pem"
    return DkimKey(write_key(path, rsa.generate_private_key(65537, 2048)), "sel", "example.org")


def body_hash(header: bytes) -> bytes:
    return re.search(rb"bh=([^;]+);", re.sub(rb"\s", b"", header))[1]  # type: ignore[index]


@pytest.mark.parametrize("message", MESSAGES.values(), ids=MESSAGES.keys())
def test_dkimpy_verifies_what_the_signer_signs(key: DkimKey, message: bytes) -> None:
    def dnsfunc(name: bytes, timeout: int = 5) -> bytes:
        return key.record().encode() if name == b"sel._domainkey.example.org." else b""

    signed = key.sign(message) + message
    assert dkim.verify(signed, dnsfunc=dnsfunc)
    theirs = dkim.sign(message, b"sel", b"example.org", key.key, canonicalize=(b"relaxed",) * 2)
    assert body_hash(key.sign(message)) == body_hash(theirs)
    refolded = signed.replace(b"Subject: ", b"Subject:\r\n  ")  # a relay may refold
    assert dkim.verify(refolded, dnsfunc=dnsfunc)
    assert not dkim.verify(signed.replace(b"Subject: ", b"Subject: x"), dnsfunc=dnsfunc)
