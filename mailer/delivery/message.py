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

import binascii
import dataclasses
import email.policy
import email.utils
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.headerregistry import Address
from email.message import EmailMessage
from html import escape

from mailer.delivery.identity import Identity
from mailer.edition import UNSUBSCRIBE_PLACEHOLDER, VIEW_PLACEHOLDER
from mailer.errors import PermanentDeliveryError, UnsafeHeaderValue
from mailer.headers import check_header_text

__all__ = [
    "MAX_ID",
    "Batch",
    "Compiled",
    "Envelope",
    "Sender",
    "check_batch",
    "delivery_key",
    "feedback_headers",
    "key_ids",
    "list_headers",
    "message_id_ids",
    "reader_name",
    "shared_list_headers",
    "to_bytes",
    "to_mime",
    "unsubscribe_header",
    "verify_header_block",
    "without_unsafe_readers",
]


MAX_ID = 2**63 - 1  # the id columns are signed 64-bit integers
_KEY = re.compile(r"([0-9]{1,19})-([0-9]{1,19})")
_MESSAGE_ID = re.compile(r"<([0-9]{1,19}-[0-9]{1,19})\.[0-9a-f]+@[^>]+>")


def delivery_key(campaign_id: int, delivery_id: int) -> str:
    """The key of one reader's copy of a campaign (``Envelope.key``), unique in the store."""
    return f"{campaign_id}-{delivery_id}"


def key_ids(key: str) -> tuple[int, int] | None:
    """(campaign id, delivery id) of a ``delivery_key``; None for other mail's keys."""
    match = _KEY.fullmatch(key)
    if match is None or max(int(match[1]), int(match[2])) > MAX_ID:
        return None
    return int(match[1]), int(match[2])


def message_id_ids(message_id: str) -> tuple[int, int] | None:
    """(campaign id, delivery id) named by a Message-ID of the shape ``Batch.message_id``
    makes; who made it is for the caller to check (against the ledger)."""
    match = _MESSAGE_ID.fullmatch(message_id)
    return key_ids(match[1]) if match else None


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
        """Unique in the world, and the same for every build of this envelope in this Batch
        (``message_id_ids`` reads the key back)."""
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
    RFC 2919's ``List-Id``, and RFC 2369 / RFC 8058 one-click unsubscribe for this reader.
    Of these, only ``List-Unsubscribe`` differs from reader to reader (``unsubscribe_header``);
    the rest is ``shared_list_headers``."""
    if not envelope.unsubscribe_url:
        return {}
    own = {"List-Unsubscribe": unsubscribe_header(batch, envelope)}
    return _list_id(identity) | own | _ONE_CLICK


_ONE_CLICK = {"List-Unsubscribe-Post": "List-Unsubscribe=One-Click"}


def _list_id(identity: Identity | None) -> dict[str, str]:
    return {"List-Id": identity.list_id_header()} if identity else {}


def shared_list_headers(identity: Identity | None) -> dict[str, str]:
    """The list headers every reader's copy carries alike."""
    return _list_id(identity) | _ONE_CLICK


def unsubscribe_header(batch: Batch, envelope: Envelope) -> str:
    """This reader's ``List-Unsubscribe``: their one-click link, then the list's mailto."""
    link = f"<{envelope.unsubscribe_url}>"
    if batch.unsubscribe_mailto:
        return f"{link}, <mailto:{batch.unsubscribe_mailto}?subject=unsubscribe>"
    return link


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


class Compiled:
    """A Batch built once: the header lines every copy shares and the MIME frame around
    the two parts, from one ``to_mime`` of a stand-in reader; ``to_bytes`` then splices
    each reader's own headers (To, Date, Message-ID, List-Unsubscribe) and body parts in.

    Building a message with the ``email`` package costs a thousand times what splicing
    does; the result parses the same (``tests/test_smtp_splice.py`` compares them), and
    every copy's header block is verified as ``to_bytes`` verifies it. A reader whose
    headers the fast path cannot write as the ``email`` package would (a name that needs
    quoting or encoding, an address outside plain ASCII) gets the ``email`` package's.
    """

    def __init__(self, batch: Batch, identity: Identity | None = None) -> None:
        self.batch = batch
        self.identity = identity
        self._frames: dict[bool, _Frame] = {}  # by "is list mail" (has an unsubscribe link)

    def to_bytes(self, envelope: Envelope) -> bytes:
        """This reader's message as ``to_bytes`` would make it, header block verified.

        Raises ``UnsafeHeaderValue`` for header text that could change the message."""
        to = _plain_to(envelope)
        if to is None:
            return to_bytes(self.batch, envelope, self.identity)
        frame = self._frame(bool(envelope.unsubscribe_url))
        html, text = self.batch.personalize(envelope)
        own = {  # each value with the space or fold after its colon
            "To": " " + to,
            "Date": " " + email.utils.format_datetime(datetime.now(UTC)),  # as `email` writes it
            "Message-ID": " " + self.batch.message_id(envelope),
        }
        if envelope.unsubscribe_url:
            own["List-Unsubscribe"] = _folded(
                "List-Unsubscribe", unsubscribe_header(self.batch, envelope)
            )
        head = [
            f"{name}:{own[name]}\r\n".encode() if name in own else shared
            for name, shared in frame.head
        ]
        data = frame.join(head, (text, html))
        verify_header_block(data, frame.names)
        return data

    def _frame(self, list_mail: bool) -> _Frame:
        if list_mail not in self._frames:
            stand_in = Envelope(
                "reader@stand-in.invalid", "", "stand-in", "https://stand-in.invalid/" * list_mail
            )
            self._frames[list_mail] = _Frame.of(to_mime(self.batch, stand_in, self.identity))
        return self._frames[list_mail]


_PER_READER = frozenset({"To", "Date", "Message-ID", "List-Unsubscribe"})
# A display name that is all atoms and an address the email package writes as it is given.
_PLAIN_NAME = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~ -]*")
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_PLAIN_ADDRESS = re.compile(rf"{_ATEXT}(?:\.{_ATEXT})*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*")
_MAX_LINE = 78  # the email package's policy.max_line_length, for the same choices


def _folded(name: str, value: str) -> str:
    """`` value`` of a list of ``<…>`` targets, folded as the email package folds it when it
    can: on the next line when it fits there; else each target on a line of its own (the
    email package would break a long link into encoded words, which list headers may not
    hold)."""
    if len(name) + 2 + len(value) <= _MAX_LINE:
        return " " + value
    if len(value) + 1 <= _MAX_LINE:
        return "\r\n " + value
    return " " + value.replace(", ", ",\r\n ")


def _plain_to(envelope: Envelope) -> str | None:
    """``Name <address>`` as the email package writes it, or None where it would quote,
    encode or fold (the slow path does that)."""
    name = reader_name(envelope)
    if not (_PLAIN_NAME.fullmatch(name) and _PLAIN_ADDRESS.fullmatch(envelope.email)):
        return None
    value = f"{name} <{envelope.email}>" if name else envelope.email
    return value if len(value) + len("To: ") <= _MAX_LINE else None


@dataclass(frozen=True)
class _Frame:
    """A built message cut into what every copy shares and what each reader fills."""

    head: list[tuple[str, bytes]]  # (name, its shared line(s) with CRLF; b"" per reader)
    names: list[str]
    boundary: bytes
    parts: list[list[tuple[str, bytes]]]  # each part's header lines

    @classmethod
    def of(cls, message: EmailMessage) -> _Frame:
        head = [
            (name, b"" if name in _PER_READER else line)
            for name, line in _header_lines(message.as_bytes())
        ]
        parts = [_header_lines(part.as_bytes()) for part in message.iter_parts()]
        # One boundary for every copy: the generator chose it not to occur in the content,
        # and what a reader adds (links, tokens) cannot hold its run of "=" and digits.
        boundary = message.get_boundary()
        assert boundary is not None  # a multipart message has one once serialized
        return cls(head, [n for n, _ in head], boundary.encode("ascii"), parts)

    def join(self, head: list[bytes], contents: tuple[str, str]) -> bytes:
        """The whole message: ``head`` (this reader's header lines), then each part."""
        out = [*head, b"\r\n"]
        for lines, content in zip(self.parts, contents, strict=True):
            encoding, body = _encode(content)
            out += [b"--", self.boundary, b"\r\n"]
            for name, line in lines:
                is_cte = name == "Content-Transfer-Encoding"
                out.append(f"{name}: {encoding}\r\n".encode() if is_cte else line)
            out += [b"\r\n", body, b"\r\n"]
        out += [b"--", self.boundary, b"--\r\n"]
        return b"".join(out)


def _header_lines(data: bytes) -> list[tuple[str, bytes]]:
    """(name, the header's line(s) with CRLF) for each header of a serialized message."""
    block = data.partition(b"\r\n\r\n")[0]
    lines = re.split(rb"\r\n(?![ \t])", block)  # one entry per header, its folding kept
    return [(line.partition(b":")[0].decode("ascii"), line + b"\r\n") for line in lines]


_NON_ASCII = bytes(range(128, 256))


def _encode(content: str) -> tuple[str, bytes]:
    """``content`` with CRLF line ends in the transfer encoding the email package would
    choose (``set_content``'s heuristic, with binascii's encoders): unencoded when every
    line is short (7bit, or 8bit for UTF-8), else the shorter of quoted-printable and base64
    by the first ten lines."""
    lines = content.encode("utf-8").splitlines()
    if max((len(x) for x in lines), default=0) <= _MAX_LINE:
        return "7bit" if content.isascii() else "8bit", b"\r\n".join(lines) + b"\r\n"
    sniff = b"\n".join(lines[:10]) + b"\n"
    base64_size = len(binascii.b2a_base64(sniff))
    # A byte past ASCII takes three in quoted-printable (=XX): counted, they often decide
    # without encoding the lines (193 → 109 µs a reader for the sample post, in Chinese).
    beyond_ascii = len(sniff) - len(sniff.translate(None, _NON_ASCII))
    if (
        len(sniff) + 2 * beyond_ascii > base64_size
        or len(binascii.b2a_qp(sniff, istext=True)) > base64_size
    ):
        encoded = binascii.b2a_base64(b"\r\n".join(lines) + b"\r\n", newline=False)
        rows = [encoded[i : i + 76] for i in range(0, len(encoded), 76)]  # as encodebytes
        return "base64", b"\r\n".join(rows) + b"\r\n"
    encoded = binascii.b2a_qp(b"\n".join(lines) + b"\n", istext=True)
    return "quoted-printable", encoded.replace(b"\n", b"\r\n")


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
