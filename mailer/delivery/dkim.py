"""DKIM signing of SMTP mail with ``dkimpy``, and the DNS record that lets receivers verify it.

The key is read and checked when the backend is built (``mailer send`` builds it before
a campaign exists), so a missing, unreadable, encrypted, short or non-RSA key is one
line naming ``MAILER_DKIM_PRIVATE_KEY_FILE``, never a failure mid-send. The signature
covers what a receiver or a forwarder must not change: the addresses, the subject,
the date, the Message-ID, the list headers (both unsubscribe headers, ``List-Id``) and
``Feedback-ID`` (Gmail counts complaints by it only when it is signed). ``From`` is
listed once more than it occurs ("over-signed"), so a second ``From`` added on the way
breaks the signature instead of being shown to the reader.
"""

from __future__ import annotations

import base64
from email.parser import BytesHeaderParser
from pathlib import Path

import dkim
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from mailer.config import Settings
from mailer.errors import ConfigError

__all__ = ["MIN_KEY_BITS", "SIGNED_HEADERS", "DkimKey", "dkim_key"]

# RFC 8301: signers MUST use at least 1024 bits; receivers may refuse shorter keys.
MIN_KEY_BITS = 1024
# Signed when present, in this order; From once more (over-signed).
SIGNED_HEADERS = (
    "from", "reply-to", "to", "subject", "date", "message-id", "list-id",
    "list-unsubscribe", "list-unsubscribe-post", "feedback-id", "mime-version", "content-type",
)  # fmt: skip
SETTING = "MAILER_DKIM_PRIVATE_KEY_FILE"


class DkimKey:
    """A private key that signs for ``domain`` under ``selector``."""

    def __init__(self, private_key_file: Path, selector: str, domain: str) -> None:
        setting = f"{SETTING}={private_key_file}"
        try:
            self.key = private_key_file.read_bytes()
        except OSError as exc:
            raise ConfigError(f"{setting}: {exc.strerror}") from exc
        self.selector = selector
        self.domain = domain.lower()
        self.public_key = _public_key(self.key, setting)
        try:  # what dkimpy itself makes of the key, before a campaign depends on it
            self.sign(b"From: check@example.org\r\nSubject: check\r\n\r\ncheck\r\n")
        except dkim.DKIMException as exc:
            problem = " ".join(str(exc).split())  # dkimpy's messages span lines
            raise ConfigError(
                f"{setting}: not a private key dkimpy can sign with: {problem}"
            ) from exc

    @property
    def record_name(self) -> str:
        """Where receivers look the public key up."""
        return f"{self.selector}._domainkey.{self.domain}"

    def record(self) -> str:
        """The TXT record to publish at ``record_name``."""
        return f"v=DKIM1; k=rsa; p={self.public_key}"

    def sign(self, message: bytes) -> bytes:
        """The ``DKIM-Signature`` header (CRLF line ends) to put before ``message``."""
        present = {name.lower() for name in BytesHeaderParser().parsebytes(message)}
        names = [name.encode() for name in SIGNED_HEADERS if name in present] + [b"from"]
        return dkim.sign(
            message,
            self.selector.encode(),
            self.domain.encode(),
            self.key,
            canonicalize=(b"relaxed", b"relaxed"),  # survives a relay's refolding
            include_headers=names,
            linesep=b"\r\n",
        )


def _public_key(pem: bytes, setting: str) -> str:
    """The key's public half as a DKIM ``p=`` value (base64 of SubjectPublicKeyInfo)."""
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except TypeError as exc:
        raise ConfigError(
            f"{setting}: the key is encrypted: store it without a passphrase"
        ) from exc
    except ValueError as exc:
        raise ConfigError(
            f"{setting}: not a private key dkimpy can sign with (an unencrypted RSA key in PEM, "
            "PKCS#1 or PKCS#8)"
        ) from exc
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ConfigError(
            f"{setting}: not an RSA key (DKIM's k=rsa; make one with `openssl genrsa`)"
        )
    if key.key_size < MIN_KEY_BITS:
        raise ConfigError(
            f"{setting}: a {key.key_size}-bit key; receivers refuse keys under {MIN_KEY_BITS} "
            "bits (use 2048)"
        )
    spki = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(spki).decode("ascii")


def dkim_key(settings: Settings) -> DkimKey | None:
    """The configured key, signing for ``MAILER_DKIM_DOMAIN`` or else the From domain; None
    without ``MAILER_DKIM_PRIVATE_KEY_FILE``."""
    if settings.dkim_private_key_file is None:
        return None
    domain = settings.dkim_domain or str(settings.sender_email).rpartition("@")[2]
    return DkimKey(settings.dkim_private_key_file, settings.dkim_selector, domain)
