"""DKIM through the SMTP backend, verified by dkimpy against the record `mailer dns` prints.

The signing domain defaults to the From domain; ``From`` is over-signed, so a second
``From`` added on the way fails verification; the identity and unsubscribe headers are
signed. A key that cannot sign is one error naming the setting, when the backend is built.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import dkim
import pytest
from aiosmtpd.smtp import Envelope as Envelope_
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from mailer.config import Settings
from mailer.delivery.dkim import dkim_key
from mailer.delivery.message import Batch, Envelope, Sender
from mailer.errors import ConfigError
from mailer.runtime import Runtime
from tests.test_smtp import smtp_sink


class Inbox:
    """An aiosmtpd handler that keeps each message as it arrived."""

    def __init__(self) -> None:
        self.received: list[bytes] = []

    async def handle_DATA(self, server: object, session: object, envelope: Envelope_) -> str:
        self.received.append(envelope.original_content or b"")
        return "250 OK"


def write_key(path: Path, key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> Path:
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL
        if isinstance(key, rsa.RSAPrivateKey)
        else serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    path.write_bytes(pem)
    return path


def test_the_smtp_copy_verifies_with_from_over_signed(settings: Settings, tmp_path: Path) -> None:
    key_file = write_key(tmp_path / "dkim.pem", rsa.generate_private_key(65537, 2048))
    handler = Inbox()
    with smtp_sink(handler) as port:
        s = settings.model_copy(
            update={
                "backend": "smtp",
                "smtp_host": "127.0.0.1",
                "smtp_port": port,
                "smtp_security": "none",
                "sender_email": "news@example.org",
                "dkim_private_key_file": key_file,
                "dkim_selector": "s2026",
            }
        )
        envelope = Envelope("ada@example.net", "Ada", "3-9", unsubscribe_url="https://m/u/1")
        batch = Batch("Weekly", "<p>hi</p>", "hi", Sender(s.sender_email), (envelope,), "c")
        [outcome] = Runtime(s).backend.send(batch)
    assert outcome.status == "sent"
    [data] = handler.received

    # The record `mailer dns` prints, served by a DNS function for the From domain.
    key = dkim_key(s)
    assert key is not None and key.record_name == "s2026._domainkey.example.org"

    def dnsfunc(name: bytes, timeout: int = 5) -> bytes:
        return key.record().encode() if name == b"s2026._domainkey.example.org." else b""

    assert dkim.verify(data, dnsfunc=dnsfunc)
    signature = re.sub(rb"\s", b"", data.split(b"DKIM-Signature:", 1)[1].split(b";b=")[0])
    assert b"d=example.org;" in signature
    signed = re.search(rb"h=([^;]+)", signature)[1].decode().split(":")  # type: ignore[index]
    assert signed.count("from") == 2
    assert {"list-unsubscribe", "list-unsubscribe-post", "list-id", "feedback-id"} <= set(signed)
    assert {"subject", "date", "message-id", "to"} <= set(signed)

    # What a receiver must not be fooled by: a second From, a changed list or campaign.
    tampered = [
        b"From: ceo@example.org\r\n" + data,
        data.replace(b"Feedback-ID: c:", b"Feedback-ID: x:"),
        data.replace(b"List-Id: The Weekly", b"List-Id: The Daily"),
    ]
    for message in tampered:
        assert message != data
        assert not dkim.verify(message, dnsfunc=dnsfunc)


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (None, "No such file or directory"),
        (b"-----BEGIN PRIVATE KEY-----\nnot a key\n", "not a private key"),
        ("short", "a 512-bit key; receivers refuse keys under 1024 bits"),
        ("ec", "not an RSA key"),
    ],
)
def test_a_key_that_cannot_sign_names_the_setting(
    settings: Settings, tmp_path: Path, content: bytes | str | None, problem: str
) -> None:
    path = tmp_path / "dkim.pem"
    if content == "short":  # cryptography makes no key this short; OpenSSL still does
        path.write_bytes(subprocess.run(["openssl", "genrsa", "512"], capture_output=True).stdout)
    elif content == "ec":
        write_key(path, ec.generate_private_key(ec.SECP256R1()))
    elif isinstance(content, bytes):
        path.write_bytes(content)
    s = settings.model_copy(update={"backend": "smtp", "dkim_private_key_file": path})
    with pytest.raises(ConfigError, match=f"^MAILER_DKIM_PRIVATE_KEY_FILE={path}: {problem}"):
        assert Runtime(s).backend
