"""The one neutral outgoing message: a Batch of content compiled once, and an Envelope per reader.

Backends translate a Batch into their own terms (a SendGrid request with
personalizations, an SMTP session, files in an outbox). What every reader's copy
must carry — their own links, the list headers, a unique Message-ID — is decided
here, once, not in each backend. So is what may not go out: text bound for a header
is checked again here (names stored before they were checked at the door, settings
changed by hand), and the serialized header block is verified, because the ``email``
package of Python before 3.11.10 / 3.12.5 (CVE-2024-6923) can write a header of its own
out of a display name.
"""

from __future__ import annotations

import dataclasses
import email.policy
import email.utils
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from email.headerregistry import Address
from email.message import EmailMessage
from html import escape

from mailer.delivery.identity import Identity
from mailer.edition import UNSUBSCRIBE_PLACEHOLDER, VIEW_PLACEHOLDER
from mailer.errors import PermanentDeliveryError, UnsafeHeaderValue
from mailer.headers import check_header_text

__all__ = [
    "Batch",
    "Envelope",
    "Sender",
    "check_batch",
    "feedback_headers",
    "list_headers",
    "reader_name",
    "to_bytes",
    "to_mime",
    "verify_header_block",
    "without_unsafe_readers",
]


@dataclass(frozen=True)
class Sender:
    email: str
    name: str = ""

    @property
    def domain(self) -> str:
        return self.email.rpartition("@")[2]


@dataclass(frozen=True)
class Envelope:
    """One reader's copy: where it goes and the links only that reader may follow."""

    email: str
    name: str
    # This reader's copy of this content (a delivery id), unique in this database: the
    # Message-ID and the provider's custom argument are made from it, never from the address.
    key: str
    unsubscribe_url: str = ""
    view_url: str = ""
    # More placeholders of this reader's copy (the tracking tokens).
    extra: dict[str, str] = field(default_factory=dict)

    def substitutions(self) -> dict[str, str]:
        """Placeholder → this reader's value (a placeholder without a value is left out)."""
        links = {UNSUBSCRIBE_PLACEHOLDER: self.unsubscribe_url, VIEW_PLACEHOLDER: self.view_url}
        return {k: v for k, v in links.items() if v} | self.extra


@dataclass(frozen=True)
class Batch:
    """Content shared by every envelope, with placeholders the envelope fills."""

    subject: str
    html: str
    text: str
    sender: Sender
    envelopes: tuple[Envelope, ...]
    # The campaign (SendGrid category); empty for transactional mail.
    category: str = ""
    # Where list unsubscribe requests by email go; empty leaves the mailto out.
    unsubscribe_mailto: str = ""
    # Random for each Batch: keys come again after a database reset or in a staging copy,
    # and a receiver drops a message whose Message-ID it has seen before.
    nonce: str = field(default_factory=lambda: secrets.token_hex(8))

    def personalize(self, envelope: Envelope) -> tuple[str, str]:
        """The HTML and text this envelope's reader gets."""
        html, text = self.html, self.text
        for placeholder, value in envelope.substitutions().items():
            html = html.replace(placeholder, escape(value, quote=True))
            text = text.replace(placeholder, value)
        return html, text

    def message_id(self, envelope: Envelope) -> str:
        """Unique in the world, and the same for every build of this envelope in this Batch."""
        return f"<{envelope.key}.{self.nonce}@{self.sender.domain}>"


def check_batch(batch: Batch) -> None:
    """Refuse a batch whose shared header text is unsafe: every reader's copy would carry it,
    so the batch fails as a whole (``PermanentDeliveryError``), not once for each reader."""
    try:
        _shared_text(batch)
    except UnsafeHeaderValue as exc:
        raise PermanentDeliveryError(f"not sent: {exc} (the same for every reader)") from exc


def _shared_text(batch: Batch) -> tuple[str, str]:
    """The subject and the sender name, or ``UnsafeHeaderValue``."""
    subject = check_header_text(batch.subject, "the subject")
    return subject, check_header_text(batch.sender.name, "the sender name (MAILER_SENDER_NAME)")


def reader_name(envelope: Envelope) -> str:
    """The reader's display name, spaces collapsed; ``UnsafeHeaderValue`` for a name with an
    encoded word or a control character, which is refused rather than folded into shape."""
    return " ".join(check_header_text(envelope.name, "the reader's name").split())


def without_unsafe_readers(batch: Batch) -> tuple[Batch, dict[str, str]]:
    """``batch`` less the readers whose name may not go into a header, and why each was left
    out (by key): they fail alone, before any request, whatever the request's fate."""
    refused: dict[str, str] = {}
    for envelope in batch.envelopes:
        try:
            reader_name(envelope)
        except UnsafeHeaderValue as exc:
            refused[envelope.key] = f"not sent: {exc}"
    safe = tuple(e for e in batch.envelopes if e.key not in refused)
    return dataclasses.replace(batch, envelopes=safe), refused


def list_headers(
    batch: Batch, envelope: Envelope, identity: Identity | None = None
) -> dict[str, str]:
    """The headers of list mail (a copy with an unsubscribe link; a confirmation is not):
    RFC 2919's ``List-Id``, and RFC 2369 / RFC 8058 one-click unsubscribe for this reader."""
    if not envelope.unsubscribe_url:
        return {}
    targets = [f"<{envelope.unsubscribe_url}>"]
    if batch.unsubscribe_mailto:
        targets.append(f"<mailto:{batch.unsubscribe_mailto}?subject=unsubscribe>")
    headers = {"List-Id": identity.list_id_header()} if identity else {}
    return headers | {
        "List-Unsubscribe": ", ".join(targets),
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
    }


def feedback_headers(batch: Batch, identity: Identity | None) -> dict[str, str]:
    """Gmail's ``Feedback-ID``, the same for every copy in ``batch`` (campaign, not reader)."""
    return {"Feedback-ID": identity.feedback_id(batch.category)} if identity else {}


def to_mime(batch: Batch, envelope: Envelope, identity: Identity | None = None) -> EmailMessage:
    """The complete message one reader gets: multipart/alternative, text first; with
    ``identity``, also ``Reply-To`` (when set), ``List-Id`` and ``Feedback-ID``.

    Raises ``UnsafeHeaderValue`` for header text that could change the message's structure.
    """
    subject, sender_name = _shared_text(batch)
    html, text = batch.personalize(envelope)
    message = EmailMessage(policy=email.policy.SMTP)
    message["From"] = Address(sender_name, addr_spec=batch.sender.email)
    message["To"] = Address(reader_name(envelope), addr_spec=envelope.email)
    message["Subject"] = subject
    message["Date"] = email.utils.formatdate(localtime=False, usegmt=True)
    message["Message-ID"] = batch.message_id(envelope)
    if identity and identity.reply_to:
        message["Reply-To"] = Address(addr_spec=identity.reply_to)
    headers = list_headers(batch, envelope, identity) | feedback_headers(batch, identity)
    for name, value in headers.items():
        message[name] = value
    message.set_content(text, subtype="plain", charset="utf-8")
    message.add_alternative(html, subtype="html", charset="utf-8")
    return message


def to_bytes(batch: Batch, envelope: Envelope, identity: Identity | None = None) -> bytes:
    """The message as it goes on the wire (CRLF line ends), its header block verified."""
    message = to_mime(batch, envelope, identity)
    data = message.as_bytes()
    verify_header_block(data, message.keys())
    return data


# A field name (RFC 5322: printable ASCII but the colon); a line of printable ASCII or tabs.
_FIELD_NAME = re.compile(rb"[!-9;-~]+")
_HEADER_LINE = re.compile(rb"[ -~\t]*")


def verify_header_block(data: bytes, names: Sequence[str]) -> None:
    """Raise ``UnsafeHeaderValue`` unless ``data`` begins with exactly the headers ``names``,
    in that order, each a ``Name:`` line followed only by folding (CRLF and a space or tab),
    then the blank line: a value that carried a line break out of its header fails here."""
    head, blank, _ = data.partition(b"\r\n\r\n")
    if not blank:
        raise UnsafeHeaderValue("the message", "no blank line ends its header block")
    found: list[str] = []
    for line in head.split(b"\r\n"):
        if not _HEADER_LINE.fullmatch(line):
            raise UnsafeHeaderValue("the message", "a header holds a control or non-ASCII byte")
        if line[:1] in (b" ", b"\t") and found:
            continue  # folding: the value of the header above goes on
        name, colon, _ = line.partition(b":")
        if not colon or not _FIELD_NAME.fullmatch(name):
            raise UnsafeHeaderValue("the message", "a line of its header block is not a header")
        found.append(name.decode("ascii"))
    if found != list(names):
        problem = f"its headers are {found}, not the {list(names)} it was built with"
        raise UnsafeHeaderValue("the message", problem)
