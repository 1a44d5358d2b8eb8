"""DKIM signing of SMTP mail with ``dkimpy``, and the DNS record that lets receivers verify it.

The key is read and checked when the backend is built (``mailer send`` builds it before
a campaign exists), so a missing, unreadable, encrypted, short or non-RSA key is one
line naming ``MAILER_DKIM_PRIVATE_KEY_FILE``, never a failure mid-send. The signature
covers what a receiver or a forwarder must not change: the addresses, the subject,
the date, the Message-ID, the list headers (both unsubscribe headers, ``List-Id``) and
``Feedback-ID`` (Gmail counts complaints by it only when it is signed). ``From`` is
listed once more than it occurs ("over-signed"), so a second ``From`` added on the way
breaks the signature instead of being shown to the reader.

Each message is signed here (RFC 6376 rsa-sha256, relaxed/relaxed) with ``cryptography``'s
RSA: dkimpy signs in pure Python, about 20 ms a message, which capped a send at a few
dozen messages a second. dkimpy still checks the key at start, and verifies in the tests.
"""

from __future__ import annotations

import base64
import hashlib
import re
import time
from pathlib import Path

import dkim
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

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
        self._private, self.public_key = _keys(self.key, setting)
        try:  # what dkimpy itself makes of the key, before a campaign depends on it
            dkim.sign(
                b"From: check@example.org\r\nSubject: check\r\n\r\ncheck\r\n",
                self.selector.encode(),
                self.domain.encode(),
                self.key,
            )
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
        """The ``DKIM-Signature`` header (CRLF line ends) to put before ``message``, whose
        line ends are CRLF. Relaxed canonicalization: it survives a relay's refolding."""
        head, _, body = message.partition(b"\r\n\r\n")
        fields = [
            (line.partition(b":")[0].strip().lower().decode("ascii"), line)
            for line in _FIELD_START.split(head)
        ]
        present = {name for name, _ in fields}
        names = [name for name in SIGNED_HEADERS if name in present] + ["from"]
        body_hash = base64.b64encode(hashlib.sha256(_relaxed_body(body)).digest()).decode()
        tags = (
            f"v=1; a=rsa-sha256; c=relaxed/relaxed; d={self.domain}; s={self.selector};\r\n"
            f" t={int(time.time())}; h={':'.join(names)};\r\n bh={body_hash};\r\n b="
        ).encode("ascii")
        signed = [_relaxed_header(line) + b"\r\n" for line in _chosen(fields, names)]
        signed.append(_relaxed_header(b"DKIM-Signature: " + tags))  # no CRLF (RFC 6376 3.7)
        signature = base64.b64encode(
            self._private.sign(b"".join(signed), padding.PKCS1v15(), hashes.SHA256())
        )
        folded = b"\r\n ".join(signature[i : i + 72] for i in range(0, len(signature), 72))
        return b"DKIM-Signature: " + tags + folded + b"\r\n"


# Where a header field starts: after a CRLF not followed by folding whitespace.
_FIELD_START = re.compile(rb"\r\n(?![ \t])")
_WSP = re.compile(rb"[ \t]+")
_FOLD = re.compile(rb"\r\n(?=[ \t])")


def _chosen(fields: list[tuple[str, bytes]], names: list[str]) -> list[bytes]:
    """The header fields ``h=`` names, in its order: for a name listed again, the next
    instance from the bottom up; none left (an over-signed name), nothing (RFC 6376 5.4.2)."""
    left: dict[str, list[bytes]] = {}
    for name, line in fields:
        left.setdefault(name, []).append(line)
    return [left[name].pop() for name in names if left.get(name)]


def _relaxed_header(line: bytes) -> bytes:
    """RFC 6376 3.4.2: lower-case name, unfolded, runs of WSP one space, none around the
    colon or at the end."""
    name, _, value = line.partition(b":")
    value = _WSP.sub(b" ", _FOLD.sub(b"", value)).strip(b" ")
    return name.strip(b" \t").lower() + b":" + value


def _relaxed_body(body: bytes) -> bytes:
    """RFC 6376 3.4.4: runs of WSP one space, none at a line's end, no empty lines at the
    end, and a non-empty body ends with CRLF."""
    body = _WSP.sub(b" ", body).replace(b" \r\n", b"\r\n").rstrip(b" \r\n")
    return body + b"\r\n" if body else b""


def _keys(pem: bytes, setting: str) -> tuple[rsa.RSAPrivateKey, str]:
    """The private key, and its public half as a DKIM ``p=`` value (base64 of
    SubjectPublicKeyInfo)."""
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
    return key, base64.b64encode(spki).decode("ascii")


def dkim_key(settings: Settings) -> DkimKey | None:
    """The configured key, signing for ``MAILER_DKIM_DOMAIN`` or else the From domain; None
    without ``MAILER_DKIM_PRIVATE_KEY_FILE``."""
    if settings.dkim_private_key_file is None:
        return None
    domain = settings.dkim_domain or settings.sender_domain
    return DkimKey(settings.dkim_private_key_file, settings.dkim_selector, domain)
