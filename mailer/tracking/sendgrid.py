"""SendGrid's signed Event Webhook: ECDSA over timestamp + raw body, then events normalised.

The signature is checked with the ``sendgrid`` package's own ``EventWebhook`` helper;
the timestamp must be within the replay window, so a captured request cannot be
played back later. Unknown event types map to ``unknown``; they never raise. An event
without SendGrid's ``sg_event_id`` is named by a hash of its content, so a request
played back within the window (or retried) repeats ids and is stored once.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import math
import re
from typing import Any, Literal

from sendgrid.helpers.eventwebhook import EventWebhook

from mailer.clock import utcnow
from mailer.errors import ConfigError, MailerError
from mailer.tracking.events import Event, EventKind

__all__ = ["SIGNATURE_HEADER", "TIMESTAMP_HEADER", "SendGridWebhook", "WebhookRefused"]

SIGNATURE_HEADER = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP_HEADER = "X-Twilio-Email-Event-Webhook-Timestamp"

log = logging.getLogger(__name__)

_UNIX_TIME = re.compile(r"[0-9]{1,20}")  # ASCII digits only, short enough to be a time
_DELIVERY = re.compile(r"([0-9]{1,19})-([0-9]{1,19})")  # our custom argument
_MAX_ID = 2**63 - 1  # the id columns are signed 64-bit integers
# SendGrid's events nest two or three levels; far deeper ones are not SendGrid's and
# would make storing or reading them recurse until it fails.
_MAX_DEPTH = 32
# PostgreSQL's text cannot hold NUL, nor UTF-8 a lone surrogate (which JSON's \ud800 makes).
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")

_KINDS = {
    "processed": EventKind.PROCESSED,
    "delivered": EventKind.DELIVERED,
    "open": EventKind.OPENED,
    "click": EventKind.CLICKED,
    "bounce": EventKind.BOUNCED,
    "deferred": EventKind.DEFERRED,
    "dropped": EventKind.DROPPED,
    "spamreport": EventKind.COMPLAINED,
    "unsubscribe": EventKind.UNSUBSCRIBED,
    "group_unsubscribe": EventKind.UNSUBSCRIBED,
}


class WebhookRefused(MailerError):
    """The request is not SendGrid's (bad or missing signature, old timestamp, no key)."""


class SendGridWebhook:
    def __init__(self, public_key: str, replay_window: float) -> None:
        """``public_key``: the verification key from SendGrid's Mail Settings (base64 DER)."""
        self.helper = EventWebhook()
        try:
            self.key = self.helper.convert_public_key_to_ecdsa(public_key) if public_key else None
        except ValueError as exc:
            raise ConfigError(
                "MAILER_SENDGRID_WEBHOOK_KEY is not a public key: paste the verification key "
                "from SendGrid's Mail Settings → Signed Event Webhook"
            ) from exc
        self.replay_window = replay_window

    def check_headers(self, signature: str, timestamp: str, now: dt.datetime) -> None:
        """What can be refused before the body is read: no key, a missing header, a
        timestamp that is no Unix time or is outside the replay window."""
        if self.key is None:
            raise WebhookRefused("no MAILER_SENDGRID_WEBHOOK_KEY is set: every event is refused")
        if not signature or not timestamp:
            raise WebhookRefused(f"missing {SIGNATURE_HEADER} or {TIMESTAMP_HEADER}")
        if not _UNIX_TIME.fullmatch(timestamp):
            raise WebhookRefused(f"{TIMESTAMP_HEADER} is not a Unix time")
        # In integers: a float of a 400-digit number overflows.
        if abs(int(now.timestamp()) - int(timestamp)) > self.replay_window:
            raise WebhookRefused(f"{TIMESTAMP_HEADER} is outside the replay window")

    def verify(self, body: bytes, signature: str, timestamp: str, now: dt.datetime) -> None:
        """The whole check, the headers' too, so that it is complete on its own."""
        self.check_headers(signature, timestamp, now)
        try:
            payload = body.decode("utf-8")
            valid = self.helper.verify_signature(payload, signature, timestamp, self.key)
        except (UnicodeDecodeError, ValueError) as exc:
            raise WebhookRefused("the signature does not verify") from exc
        if not valid:
            raise WebhookRefused("the signature does not verify")

    @staticmethod
    def parse(body: bytes) -> list[Event]:
        """The events of a verified request (a JSON array); ``ValueError`` if malformed.

        Events the database cannot hold are skipped (and logged), so that the rest of the
        batch still counts and SendGrid does not retry it forever.
        """
        try:
            payload = json.loads(body)
        except RecursionError as exc:
            raise ValueError("the body is nested too deeply") from exc
        if not isinstance(payload, list):
            raise ValueError("the body is not a JSON array of events")
        events = []
        for index, item in enumerate(payload):
            if not isinstance(item, dict):
                continue
            problem = _unstorable(item)
            if problem:
                log.warning("SendGrid event %d of a batch skipped: %s", index, problem)
            else:
                events.append(_event(item))
        return events


def _unstorable(item: dict[str, Any]) -> str | None:
    """Why ``item`` cannot be stored, if it cannot (walked without recursion)."""
    stack: list[tuple[Any, int]] = [(item, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > _MAX_DEPTH:
            return f"nested deeper than {_MAX_DEPTH} levels"
        if isinstance(value, str) and _UNSTORABLE.search(value):
            return "a NUL or a lone surrogate in a string"
        if isinstance(value, float) and not math.isfinite(value):
            return "NaN or an infinite number, which JSON cannot hold"
        if isinstance(value, dict):
            stack.extend((key, depth) for key in value)
            stack.extend((child, depth + 1) for child in value.values())
        elif isinstance(value, list):
            stack.extend((child, depth + 1) for child in value)
    return None


def _event(item: dict[str, Any]) -> Event:
    kind = _KINDS.get(str(item.get("event", "")), EventKind.UNKNOWN)
    campaign_id, delivery_id = _delivery(item.get("delivery"))
    try:
        at = dt.datetime.fromtimestamp(int(item.get("timestamp", 0)), dt.UTC)
    except (TypeError, ValueError, OverflowError, OSError):  # OSError: out of the OS's range
        at = utcnow()
    event_id = item.get("sg_event_id")
    return Event(
        kind=kind,
        at=at,
        source="sendgrid",
        campaign_id=campaign_id,
        delivery_id=delivery_id,
        email=str(item.get("email", "")),
        provider_event_id=str(event_id)[:100] if event_id else _content_id(item),
        bounce=_bounce(item) if kind == EventKind.BOUNCED else "",
        machine=bool(item.get("sg_machine_open")),
        raw=item,
    )


def _content_id(item: dict[str, Any]) -> str:
    """An id for an event without SendGrid's: the same event, replayed, gets the same id."""
    canonical = json.dumps(item, sort_keys=True, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


def _delivery(value: Any) -> tuple[int | None, int | None]:
    """Our custom argument ``delivery``: ``<campaign id>-<delivery id>``; ids that no
    64-bit column holds are none of ours."""
    match = _DELIVERY.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        return None, None
    campaign, delivery = int(match[1]), int(match[2])
    return (campaign, delivery) if max(campaign, delivery) <= _MAX_ID else (None, None)


def _bounce(item: dict[str, Any]) -> Literal["hard", "soft", "block"]:
    if item.get("type") == "blocked":
        return "block"
    return "soft" if str(item.get("status", "")).startswith("4") else "hard"
