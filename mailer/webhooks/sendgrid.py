"""SendGrid's signed Event Webhook: ECDSA over timestamp + raw body, then events normalised.

The signature is checked with the ``sendgrid`` package's own ``EventWebhook`` helper;
the timestamp must be within the replay window, so a captured request cannot be
played back later. Unknown event types map to ``unknown``; they never raise.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from sendgrid.helpers.eventwebhook import EventWebhook

from mailer.errors import ConfigError, MailerError
from mailer.events import Event, EventKind

__all__ = ["SIGNATURE_HEADER", "TIMESTAMP_HEADER", "SendGridWebhook", "WebhookRefused"]

SIGNATURE_HEADER = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP_HEADER = "X-Twilio-Email-Event-Webhook-Timestamp"

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

    def verify(self, body: bytes, signature: str, timestamp: str, now: dt.datetime) -> None:
        if self.key is None:
            raise WebhookRefused("no MAILER_SENDGRID_WEBHOOK_KEY is set: every event is refused")
        if not signature or not timestamp:
            raise WebhookRefused(f"missing {SIGNATURE_HEADER} or {TIMESTAMP_HEADER}")
        try:
            age = now.timestamp() - int(timestamp)
        except ValueError as exc:
            raise WebhookRefused(f"{TIMESTAMP_HEADER} is not a Unix time") from exc
        if abs(age) > self.replay_window:
            raise WebhookRefused(f"{TIMESTAMP_HEADER} is outside the replay window")
        try:
            payload = body.decode("utf-8")
            valid = self.helper.verify_signature(payload, signature, timestamp, self.key)
        except (UnicodeDecodeError, ValueError) as exc:
            raise WebhookRefused("the signature does not verify") from exc
        if not valid:
            raise WebhookRefused("the signature does not verify")

    @staticmethod
    def parse(body: bytes) -> list[Event]:
        """The events of a verified request (a JSON array); ``ValueError`` if malformed."""
        payload = json.loads(body)
        if not isinstance(payload, list):
            raise ValueError("the body is not a JSON array of events")
        return [_event(item) for item in payload if isinstance(item, dict)]


def _event(item: dict[str, Any]) -> Event:
    kind = _KINDS.get(str(item.get("event", "")), EventKind.UNKNOWN)
    campaign_id, delivery_id = _delivery(item.get("delivery"))
    try:
        at = dt.datetime.fromtimestamp(int(item.get("timestamp", 0)), dt.UTC)
    except (TypeError, ValueError, OverflowError, OSError):  # OSError: out of the OS's range
        at = dt.datetime.now(dt.UTC)
    event_id = item.get("sg_event_id")
    return Event(
        kind=kind,
        at=at,
        source="sendgrid",
        campaign_id=campaign_id,
        delivery_id=delivery_id,
        email=str(item.get("email", "")),
        provider_event_id=str(event_id)[:100] if event_id else None,
        bounce=_bounce(item) if kind == EventKind.BOUNCED else "",
        machine=bool(item.get("sg_machine_open")),
        raw=item,
    )


def _delivery(value: Any) -> tuple[int | None, int | None]:
    """Our custom argument ``delivery``: ``<campaign id>-<delivery id>``."""
    campaign, _, delivery = str(value or "").partition("-")
    if campaign.isdigit() and delivery.isdigit():
        return int(campaign), int(delivery)
    return None, None


def _bounce(item: dict[str, Any]) -> str:
    if item.get("type") == "blocked":
        return "block"
    return "soft" if str(item.get("status", "")).startswith("4") else "hard"
