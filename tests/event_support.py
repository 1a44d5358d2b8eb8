"""Helpers for the tracking, webhook, reconcile and stats tests (not a test module).

A SendGrid-style signing key made in the test, signed POSTs to the live app's
``/webhooks/sendgrid``, SendGrid-shaped events, seeded readers, posts written to disk,
and a runtime on the live server's own database and secrets.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import httpx
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import func, select
from sqlalchemy.orm import sessionmaker

from mailer.content.post import load_post
from mailer.content.render import Renderer
from mailer.runtime import Runtime
from mailer.sending.dispatch import create_campaign
from mailer.store.ledger import Delivery
from mailer.tracking.events import EventRecord
from subscribers import store
from subscribers.models import Status, Subscriber

SIGNATURE = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP = "X-Twilio-Email-Event-Webhook-Timestamp"
CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36"
)


class WebhookKey:
    """An ECDSA P-256 key pair, as SendGrid holds for a signed Event Webhook."""

    def __init__(self) -> None:
        self.private = ec.generate_private_key(ec.SECP256R1())
        der = self.private.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        # What SendGrid shows under Mail Settings → Signed Event Webhook.
        self.public_b64 = base64.b64encode(der).decode()

    def sign(self, body: bytes, timestamp: str) -> str:
        signature = self.private.sign(timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
        return base64.b64encode(signature).decode()

    def headers(self, body: bytes, timestamp: str | None = None) -> dict[str, str]:
        timestamp = timestamp if timestamp is not None else str(int(time.time()))
        return {
            SIGNATURE: self.sign(body, timestamp),
            TIMESTAMP: timestamp,
            "content-type": "application/json",
        }


def encode(events: list[dict[str, Any]]) -> bytes:
    return json.dumps(events, separators=(",", ":")).encode()


def post_events(
    base_url: str,
    body: bytes | list[dict[str, Any]],
    key: WebhookKey | None,
    *,
    timestamp: str | None = None,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    """POST ``body`` to the live app's SendGrid webhook, signed with ``key`` (if any)."""
    raw = body if isinstance(body, bytes) else encode(body)
    sent = {"content-type": "application/json", "connection": "close"}
    if key is not None:
        sent.update(key.headers(raw, timestamp))
    sent.update(headers or {})
    return httpx.post(f"{base_url}/webhooks/sendgrid", content=raw, headers=sent, timeout=30)


def sg_event(event: str, email: str, delivery: str | None = None, **extra: Any) -> dict[str, Any]:
    """One SendGrid event as the Event Webhook posts it, with our custom argument copied in."""
    item: dict[str, Any] = {
        "email": email,
        "timestamp": int(time.time()),
        "event": event,
        "sg_event_id": uuid.uuid4().hex,
        "sg_message_id": f"{uuid.uuid4().hex[:22]}.filter0001.1-1-0",
        "smtp-id": f"<{uuid.uuid4().hex}@example.org>",
    }
    if delivery is not None:
        item["delivery"] = delivery
    item.update(extra)
    return item


def count_events(sessions: sessionmaker, **where: Any) -> int:
    with sessions() as session:
        query = select(func.count()).select_from(EventRecord)
        for column, value in where.items():
            query = query.where(getattr(EventRecord, column) == value)
        return session.scalar(query) or 0


def events_of(sessions: sessionmaker) -> list[EventRecord]:
    with sessions() as session:
        return list(session.scalars(select(EventRecord).order_by(EventRecord.id)))


def wait_for(check: Callable[[], bool], seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not true after {seconds}s: {check}")
        time.sleep(0.05)


def seed(sessions: sessionmaker, emails: Iterable[str]) -> dict[str, int]:
    """Confirmed subscribers; returns their ids by address."""
    consent = store.Consent(source="test", text="test")
    ids = {}
    with sessions.begin() as session:
        for email in emails:
            subscriber = store.add(session, email, consent, status=Status.CONFIRMED).subscriber
            assert subscriber is not None
            ids[email] = subscriber.id
    return ids


def subscriber(sessions: sessionmaker, email: str) -> Subscriber:
    with sessions() as session:
        found = store.find(session, email)
        assert found is not None, email
        return found


def suppression_reason(sessions: sessionmaker, email: str) -> str | None:
    with sessions() as session:
        found = store.suppression_of(session, email)
        return found.reason if found is not None else None


def deliveries(sessions: sessionmaker, campaign_id: int) -> dict[str, Delivery]:
    """The campaign's ledger rows by reader address."""
    with sessions() as session:
        rows = session.execute(
            select(Subscriber.email, Delivery)
            .join(Delivery, Delivery.subscriber_id == Subscriber.id)
            .where(Delivery.campaign_id == campaign_id)
        ).all()
        return {email: delivery for email, delivery in rows}


def write_post(folder: Path, slug: str, title: str, links: list[str]) -> Path:
    """A post whose body links to each of ``links`` (Markdown links, in order)."""
    sentences = " ".join(f"Read [story {i}]({url})." for i, url in enumerate(links))
    path = folder / f"{slug}.md"
    path.write_text(
        f"---\ntitle: {title}\nscheduled: 2026-02-06\n---\n"
        f"An opening paragraph for the readers. {sentences}\n\nMore text below it.\n",
        "utf-8",
    )
    return path


def new_campaign(rt: Runtime, post: Path, tracking: bool | None = None) -> int:
    edition = Renderer(rt.settings).render(load_post(post))
    campaign, new = create_campaign(rt, edition, post, tracking=tracking)
    assert new
    return campaign.id
