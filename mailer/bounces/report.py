"""One returned message read into a ``Report``: what it says happened, to whom, about which copy.

Standard reports first: a DSN (RFC 3464, ``multipart/report; report-type=delivery-status``:
``Action``, ``Status``, ``Final-Recipient``, ``Diagnostic-Code`` per recipient), as
Postfix, Gmail, Microsoft 365 and current Exim send them, and an ARF complaint (RFC 5965,
``report-type=feedback-report``), as the mailbox providers' feedback loops send them.
Anything else is given to ``flufl.bounce``, which knows the older free-text bounces (Exim's,
qmail's, Yahoo's, …). What the report is about is found by the addresses it came back to
(our VERP address: ``Delivered-To``, ``X-Original-To``, ``To``, …, the complaint's
``Original-Mail-From``, the quoted original's ``Return-Path``, or anywhere in its text) and
by the quoted original's ``Message-ID``; ``ingest`` decides which of them is ours.

Everything here is text from a stranger: what is kept is bounded in length and free of
control characters, so it can go into the database, a log line or the terminal.
"""

from __future__ import annotations

import email
import email.policy
import hashlib
import re
from dataclasses import dataclass
from email.message import Message
from email.utils import getaddresses
from typing import Literal

from flufl.bounce import all_failures

from mailer.delivery.verp import LOCAL_PREFIX
from mailer.errors import MailerError

__all__ = ["Kind", "NotAReport", "Report", "parse"]

# hard: the address does not exist; soft: try later (a full mailbox); block: refused by
# policy (taken for spam); complaint: the reader marked it as spam; delayed: still trying;
# delivered: a positive DSN (relayed, delivered, expanded).
Kind = Literal["hard", "soft", "block", "complaint", "delayed", "delivered"]


class NotAReport(MailerError):
    """A message that is no bounce or complaint this module can read."""


@dataclass(frozen=True)
class Report:
    kind: Kind
    # The report's own Message-ID (or a hash of its bytes): one event per report.
    report_id: str
    recipient: str = ""  # the address that failed or complained, as the report says
    status: str = ""  # RFC 3463 enhanced status code, e.g. 5.1.1
    diagnostic: str = ""  # the remote server's words
    reporter: str = ""  # Reporting-MTA, User-Agent or the detector that read it
    # Addresses the report came back to, best first: our VERP address is among them.
    returned_to: tuple[str, ...] = ()
    # Message-IDs of the original message, as quoted in the report.
    original_ids: tuple[str, ...] = ()

    def detail(self) -> dict[str, str]:
        """What the event keeps of the report."""
        return {
            "report": self.report_id,
            "recipient": self.recipient,
            "status": self.status,
            "diagnostic": self.diagnostic,
            "reporter": self.reporter,
        }


_MAX_TEXT = 500
_UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]+")
_ENHANCED = re.compile(r"\b([245])\.([0-9]{1,3})\.([0-9]{1,3})\b")
_BASIC = re.compile(r"\b([245])[0-9]{2}\b")
_MESSAGE_ID = re.compile(r"^message-id:[ \t]*(<[^>\s]{1,250}>)", re.IGNORECASE | re.MULTILINE)
_RETURN_PATH = re.compile(r"^return-path:[ \t]*<([^>\s]{1,250})>", re.IGNORECASE | re.MULTILINE)
_VERP_ANYWHERE = re.compile(
    rf"{LOCAL_PREFIX}\+[0-9a-z]+-[0-9a-z]+-[a-z2-7]{{20}}@[a-z0-9.-]+", re.IGNORECASE
)
# Headers that name the address a message was delivered to, most reliable first.
_RETURNED_TO = ("Delivered-To", "X-Original-To", "Envelope-To", "X-Envelope-To", "To", "Cc")
_SEVERITY = {"failed": 3, "delayed": 2, "delivered": 1, "relayed": 1, "expanded": 1}


def parse(data: bytes) -> Report:
    """The report in ``data`` (one whole message); ``NotAReport`` if it is none."""
    message = email.message_from_bytes(data, policy=email.policy.compat32)
    if not message.keys():
        raise NotAReport("not a mail message: no header")
    report_id = _clean(message.get("Message-ID", "")).strip()[:200] or (
        "sha256:" + hashlib.sha256(data).hexdigest()
    )
    returned_to = [a for name in _RETURNED_TO for a in _addresses(message.get_all(name, []))]
    text = _all_text(message)
    original_ids = _MESSAGE_ID.findall(text)
    own_id = message.get("Message-ID", "").strip()
    original_ids = [i for i in dict.fromkeys(original_ids) if i != own_id]
    returned_to += _RETURN_PATH.findall(text) + _VERP_ANYWHERE.findall(text)

    report_type = message.get_param("report-type", "", header="content-type")
    if message.get_content_type() == "multipart/report" and isinstance(report_type, str):
        if report_type.lower() == "feedback-report":
            fields = _feedback_fields(message)
            if fields is not None:
                returned_to = _addresses(fields.get_all("Original-Mail-From", [])) + returned_to
                kind: Kind = "complaint" if _is_abuse(fields) else "delivered"
                recipient = _first(_addresses(fields.get_all("Original-Rcpt-To", [])))
                return Report(
                    kind=kind,
                    report_id=report_id,
                    recipient=recipient,
                    reporter=_clean(fields.get("User-Agent", "")),
                    returned_to=_unique(returned_to),
                    original_ids=tuple(original_ids),
                )
        elif report_type.lower() == "delivery-status":
            found = _delivery_status(message)
            if found is not None:
                kind, recipient, status, diagnostic, reporter = found
                return Report(
                    kind=kind,
                    report_id=report_id,
                    recipient=recipient,
                    status=status,
                    diagnostic=diagnostic,
                    reporter=reporter,
                    returned_to=_unique(returned_to),
                    original_ids=tuple(original_ids),
                )
    temporary, permanent = all_failures(message)
    failed = permanent or temporary
    if not failed:
        raise NotAReport("neither a delivery status report, a complaint nor a known bounce")
    recipient = _clean(sorted(failed)[0].decode("utf-8", "replace"))
    return Report(
        kind="hard" if permanent else "soft",
        report_id=report_id,
        recipient=recipient,
        status=_status_in(text[:4000]),
        reporter="flufl.bounce",
        returned_to=_unique(returned_to),
        original_ids=tuple(original_ids),
    )


def _delivery_status(message: Message) -> tuple[Kind, str, str, str, str] | None:
    """The most severe recipient block of the first ``message/delivery-status`` part."""
    for part in message.walk():
        if part.get_content_type() != "message/delivery-status":
            continue
        blocks = _inner(part)
        if not blocks:
            return None
        reporter = _clean(blocks[0].get("Reporting-MTA", "")).partition(";")[2].strip()
        recipients = [b for b in blocks[1:] if b.get("Action")] or [
            b for b in blocks if b.get("Action")
        ]
        if not recipients:
            return None
        worst = max(recipients, key=lambda b: _SEVERITY.get(_action(b), 0))
        action = _action(worst)
        diagnostic = _clean(worst.get("Diagnostic-Code", "")).partition(";")[2].strip()
        status = _status_in(_clean(worst.get("Status", ""))) or _status_in(diagnostic)
        recipient = (
            _clean(worst.get("Final-Recipient", "") or worst.get("Original-Recipient", ""))
            .partition(";")[2]
            .strip()
        )
        if action == "failed":
            kind = _failure_kind(status)
        elif action == "delayed":
            kind = "delayed"
        elif action in _SEVERITY:
            kind = "delivered"
        else:
            return None
        return kind, recipient, status, diagnostic, reporter
    return None


def _failure_kind(status: str) -> Kind:
    """A failure by its status: 4.x.x, given up after trying (a soft bounce); 5.7.x, refused
    by policy (the address is fine, as an SMTP 5.7 refusal at sending time); 5.2.2, a full
    mailbox (soft, as SendGrid counts it); any other 5.x.x, or none, the address is gone."""
    if status.startswith("4."):
        return "soft"
    if status.startswith("5.7."):
        return "block"
    if status == "5.2.2":
        return "soft"
    return "hard"


def _feedback_fields(message: Message) -> Message | None:
    for part in message.walk():
        if part.get_content_type() == "message/feedback-report":
            inner = _inner(part)
            if inner is not None:  # parsed as a message of its own
                return inner[0] if inner else None
            body = part.get_payload(decode=True)
            data = body if isinstance(body, bytes) else b""
            return email.message_from_bytes(data.lstrip(), policy=email.policy.compat32)
    return None


def _is_abuse(fields: Message) -> bool:
    """RFC 5965's ``abuse`` (spam) and ``fraud`` are complaints; ``not-spam``, ``virus``,
    ``auth-failure`` and ``other`` are not about the reader wanting this mail."""
    return fields.get("Feedback-Type", "").strip().lower() in ("abuse", "fraud")


def _action(block: Message) -> str:
    return block.get("Action", "").strip().lower()


def _status_in(text: str) -> str:
    match = _ENHANCED.search(text)
    if match:
        return match[0]
    basic = _BASIC.search(text)
    return f"{basic[1]}.0.0" if basic else ""


def _decoded(payload: bytes, charset: str | None) -> str:
    """The part's text in its declared charset; in UTF-8 when it names none Python knows
    (the sender's to choose, and one such report must not stop the whole fetch)."""
    try:
        return payload.decode(charset or "utf-8", "replace")
    except LookupError:
        return payload.decode("utf-8", "replace")


def _all_text(message: Message) -> str:
    """The text of every part, the quoted original's headers included, bounded in size."""
    chunks: list[str] = []
    size = 0
    for part in message.walk():
        inner = _inner(part)
        if part.get_content_maintype() == "message" and inner is not None:
            # A quoted original (its headers; walk() goes on into its body) or DSN fields.
            for item in inner:
                chunks.append("".join(f"{name}: {value}\n" for name, value in item.items()))
            continue
        if part.is_multipart():
            continue
        payload = part.get_payload(decode=True)
        if not isinstance(payload, bytes):
            continue
        chunks.append(_decoded(payload[:200_000], part.get_content_charset()))
        size += len(chunks[-1])
        if size > 1_000_000:
            break
    return "\n".join(chunks)


def _inner(part: Message) -> list[Message] | None:
    """The messages a part holds (a ``message/*`` part's are parsed as messages of their
    own), or None when it holds text."""
    payload = part.get_payload()
    if not isinstance(payload, list):
        return None
    return [item for item in payload if isinstance(item, Message)]


def _addresses(values: list[str]) -> list[str]:
    return [_clean(address) for _, address in getaddresses([str(v) for v in values]) if address]


def _unique(values: list[str]) -> tuple[str, ...]:
    return tuple(v for v in dict.fromkeys(values) if v)


def _first(values: list[str]) -> str:
    return values[0] if values else ""


def _clean(value: object) -> str:
    """Stranger's text made safe to store and print: no control characters, bounded."""
    return " ".join(_UNSAFE.sub(" ", str(value)).split())[:_MAX_TEXT]
