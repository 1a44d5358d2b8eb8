"""Who a message says it comes from, beyond ``From``: ``List-Id``, ``Feedback-ID``, ``Reply-To``.

Mailbox providers file, filter and count complaints by these. ``List-Id`` (RFC 2919)
names the list for the reader's filters and for Gmail's bulk-mail handling;
``Feedback-ID`` (Gmail's feedback loop, ``a:b:c:SenderId``) lets Postmaster Tools say
which campaign drew complaints. Both are made here from the settings, once per
process, as ASCII: SendGrid passes header values through as given ("properly encoded"
is the caller's job), so the same text goes out through every backend.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from email.header import Header

from mailer.config import Settings

__all__ = ["NOTICE_CAMPAIGN", "Identity", "list_label"]

# Feedback-ID's campaign field for mail outside a campaign (confirmations, test copies).
NOTICE_CAMPAIGN = "notice"
_NOT_LABEL = re.compile(r"[^a-z0-9]+")
_NOT_FEEDBACK = re.compile(r"[^A-Za-z0-9._-]+")
# RFC 5322 atext and spaces: a phrase that needs no quotes.
_ATOMS = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~ -]+")
_LABEL_MAX = 63  # one DNS label
_FEEDBACK_FIELD_MAX = 64


def list_label(text: str) -> str:
    """``text`` as a DNS-label-like slug (``The Weekly`` → ``the-weekly``); may be empty."""
    return _NOT_LABEL.sub("-", text.lower()).strip("-")[:_LABEL_MAX].strip("-")


def _feedback_field(text: str) -> str:
    """One Feedback-ID identifier: no colon, no space; a name with none of those characters
    (a Chinese slug, say) becomes a stable digest of it, so the campaign is still told apart."""
    field = _NOT_FEEDBACK.sub("-", text).strip("-")[:_FEEDBACK_FIELD_MAX]
    return field or "h" + hashlib.sha256(text.encode()).hexdigest()[:12]


def _phrase(name: str) -> str:
    """``name`` as an RFC 5322 phrase in ASCII: bare, quoted, or an RFC 2047 encoded word."""
    if _ATOMS.fullmatch(name):
        return name
    if name.isascii():
        return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return Header(name, "utf-8").encode(maxlinelen=10_000)


@dataclass(frozen=True)
class Identity:
    """The identity headers of one publication, the same on every backend."""

    list_name: str
    list_id: str  # RFC 2919 list-id: label.domain
    publication: str  # Feedback-ID's publication field
    sender_id: str  # Feedback-ID's SenderId
    reply_to: str = ""

    @classmethod
    def of(cls, settings: Settings) -> Identity:
        """From the publication name and the From domain (the namespace RFC 2919 asks for:
        a domain the list's owner controls)."""
        local = settings.sender_email.rpartition("@")[0]
        label = list_label(settings.publication_name) or list_label(local) or "newsletter"
        namespace = settings.sender_domain
        return cls(
            list_name=settings.publication_name,
            list_id=f"{label}.{namespace}",
            publication=_feedback_field(label),
            sender_id=settings.feedback_sender_id,
            reply_to=str(settings.reply_to),
        )

    def list_id_header(self) -> str:
        """``The Weekly <the-weekly.example.com>``."""
        name = " ".join(self.list_name.split())
        return f"{_phrase(name)} <{self.list_id}>" if name else f"<{self.list_id}>"

    def feedback_id(self, campaign: str) -> str:
        """``campaign:publication:SenderId`` (``campaign`` empty: outside a campaign)."""
        fields = (_feedback_field(campaign or NOTICE_CAMPAIGN), self.publication, self.sender_id)
        return ":".join(fields)
