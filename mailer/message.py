"""The one neutral outgoing message: a Batch of content compiled once, and an Envelope per reader.

Backends translate a Batch into their own terms (a SendGrid request with
personalizations, an SMTP session, files in an outbox). What every reader's copy
must carry — their own links, the list headers, a stable Message-ID — is decided
here, once, not in each backend.
"""

from __future__ import annotations

import email.policy
import email.utils
from dataclasses import dataclass, field
from email.headerregistry import Address
from email.message import EmailMessage
from html import escape

from mailer.edition import UNSUBSCRIBE_PLACEHOLDER, VIEW_PLACEHOLDER

__all__ = ["Batch", "Envelope", "Sender", "list_headers", "to_mime"]


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
    # Stable for this reader and this content (a delivery id): the Message-ID and the
    # provider's custom argument are made from it, never from the address.
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

    def personalize(self, envelope: Envelope) -> tuple[str, str]:
        """The HTML and text this envelope's reader gets."""
        html, text = self.html, self.text
        for placeholder, value in envelope.substitutions().items():
            html = html.replace(placeholder, escape(value, quote=True))
            text = text.replace(placeholder, value)
        return html, text

    def message_id(self, envelope: Envelope) -> str:
        return f"<{envelope.key}@{self.sender.domain}>"


def list_headers(batch: Batch, envelope: Envelope) -> dict[str, str]:
    """RFC 2369 / RFC 8058 headers: one-click unsubscribe for this reader."""
    if not envelope.unsubscribe_url:
        return {}
    targets = [f"<{envelope.unsubscribe_url}>"]
    if batch.unsubscribe_mailto:
        targets.append(f"<mailto:{batch.unsubscribe_mailto}?subject=unsubscribe>")
    return {
        "List-Unsubscribe": ", ".join(targets),
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
    }


def to_mime(batch: Batch, envelope: Envelope) -> EmailMessage:
    """The complete message one reader gets: multipart/alternative, text first."""
    html, text = batch.personalize(envelope)
    message = EmailMessage(policy=email.policy.SMTP)
    message["From"] = Address(batch.sender.name, addr_spec=batch.sender.email)
    # A display name with a line break (typed into a form, say) would break the header.
    message["To"] = Address(" ".join(envelope.name.split()), addr_spec=envelope.email)
    message["Subject"] = batch.subject
    message["Date"] = email.utils.formatdate(localtime=False, usegmt=True)
    message["Message-ID"] = batch.message_id(envelope)
    for name, value in list_headers(batch, envelope).items():
        message[name] = value
    message.set_content(text, subtype="plain", charset="utf-8")
    message.add_alternative(html, subtype="html", charset="utf-8")
    return message
