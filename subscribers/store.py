"""Every query on subscribers. Callers hand in a Session and commit; nothing here commits.

The invariant this module keeps: an address that unsubscribed, bounced hard,
complained or was erased is in the suppression list, and nothing here (an add, an
import, a form) takes it out again.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import func, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from mailer.clock import utcnow
from mailer.headers import check_header_text
from mailer.store.dialect import among
from mailer.store.ledger import Delivery
from subscribers.addresses import address_hash, lookup_hash, normalize
from subscribers.models import Activity, Status, Subscriber, Suppression, SuppressionReason

__all__ = [
    "AddResult",
    "Consent",
    "add",
    "addressed_by",
    "clean_name",
    "confirm",
    "count_by_status",
    "erase",
    "find",
    "forgive_soft_bounces",
    "gdpr_export",
    "reader_of",
    "record",
    "remove",
    "soft_bounce",
    "suppress",
    "suppression_of",
    "unsubscribe",
    "unsubscribed_since",
]

# Statuses whose addresses are also in the suppression list.
_SUPPRESSING = {
    Status.UNSUBSCRIBED: SuppressionReason.UNSUBSCRIBED,
    Status.BOUNCED: SuppressionReason.BOUNCED,
    Status.COMPLAINED: SuppressionReason.COMPLAINED,
}


@dataclass(frozen=True)
class Consent:
    """Who agreed to what, when, and through which form or import."""

    source: str
    text: str
    ip: str = ""
    user_agent: str = ""


@dataclass(frozen=True)
class AddResult:
    outcome: Literal["added", "exists", "suppressed"]
    subscriber: Subscriber | None


def find(session: Session, email: str) -> Subscriber | None:
    return session.scalar(select(Subscriber).where(Subscriber.email_hash == lookup_hash(email)))


def suppression_of(session: Session, email: str) -> Suppression | None:
    return session.get(Suppression, lookup_hash(email))


def clean_name(name: str) -> str:
    """``name`` without surrounding whitespace; ``UnsafeHeaderValue`` when it may not go into
    the To: header of the mail we send (refused where it comes in, not folded silently)."""
    return check_header_text(name.strip(), "name")


def add(
    session: Session,
    email: str,
    consent: Consent,
    *,
    name: str = "",
    tags: tuple[str, ...] = (),
    status: Status = Status.PENDING,
) -> AddResult:
    """Add an address, unless it is on the list already or suppressed (then say which).

    An unusable address or name raises ``InvalidAddress`` or ``UnsafeHeaderValue``.
    """
    name = clean_name(name)
    email = normalize(email)
    if suppression_of(session, email) is not None:
        return AddResult("suppressed", find(session, email))
    existing = find(session, email)
    if existing is not None:
        return AddResult("exists", existing)
    now = utcnow()
    subscriber = Subscriber(
        email=email,
        email_hash=address_hash(email),
        name=name,
        status=status,
        tags=list(tags),
        source=consent.source,
        created_at=now,
        confirmed_at=now if status == Status.CONFIRMED else None,
        consent_at=now,
        consent_ip=consent.ip,
        consent_user_agent=consent.user_agent[:400],
        consent_source=consent.source,
        consent_text=consent.text,
    )
    try:
        with session.begin_nested():  # a double-click can race us to the same address
            session.add(subscriber)
    except IntegrityError:
        return AddResult("exists", find(session, email))
    record(session, subscriber.id, "subscribed", status=str(status), source=consent.source)
    return AddResult("added", subscriber)


def confirm(session: Session, subscriber: Subscriber) -> bool:
    """Confirm a pending subscriber; False when there was nothing to confirm."""
    if subscriber.status != Status.PENDING:
        return False
    subscriber.status = Status.CONFIRMED
    subscriber.confirmed_at = utcnow()
    record(session, subscriber.id, "confirmed")
    return True


def unsubscribe(
    session: Session, subscriber: Subscriber, how: str, status: Status = Status.UNSUBSCRIBED
) -> bool:
    """Take a subscriber off the list for good; False if they were off it already."""
    already = subscriber.status in _SUPPRESSING
    if not already:
        subscriber.status = status
        subscriber.unsubscribed_at = utcnow()
        record(session, subscriber.id, str(status), how=how)
    suppress(session, subscriber.email_hash, _SUPPRESSING[Status(subscriber.status)], how)
    return not already


def suppress(
    session: Session, email_hash: str, reason: SuppressionReason, detail: str = ""
) -> None:
    """Put an address (by hash) on the suppression list; the first reason stays."""
    if session.get(Suppression, email_hash) is None:
        session.add(Suppression(email_hash=email_hash, reason=reason, detail=detail))
        session.flush()


def record(session: Session, subscriber_id: int | None, kind: str, **detail: Any) -> None:
    session.add(Activity(subscriber_id=subscriber_id, kind=kind, detail=detail))


def count_by_status(session: Session) -> dict[str, int]:
    counts = {str(status): 0 for status in Status}
    rows = session.execute(select(Subscriber.status, func.count()).group_by(Subscriber.status))
    counts.update({status: count for status, count in rows})
    return counts


def soft_bounce(session: Session, subscriber: Subscriber) -> int:
    """Count a temporary bounce (a full mailbox, greylisting) against a subscriber;
    returns how many they have had since their mail last got through."""
    subscriber.soft_bounces += 1
    record(session, subscriber.id, "soft_bounce", count=subscriber.soft_bounces)
    return subscriber.soft_bounces


def forgive_soft_bounces(session: Session, delivery_ids: Sequence[int]) -> None:
    """The readers of ``delivery_ids`` got their mail: their mailbox works again, and their
    earlier soft bounces are forgiven."""
    if delivery_ids:
        session.execute(
            update(Subscriber)
            .where(
                Subscriber.soft_bounces > 0,
                Subscriber.id.in_(
                    select(Delivery.subscriber_id).where(
                        among(session.connection(), Delivery.id, delivery_ids)
                    )
                ),
            )
            .values(soft_bounces=0)
        )


def reader_of(session: Session, delivery_id: int | None, email: str) -> Subscriber | None:
    """The subscriber a delivery went to, or else the one with the address ``email``."""
    if delivery_id is not None:
        subscriber_id = session.scalar(
            select(Delivery.subscriber_id).where(Delivery.id == delivery_id)
        )
        if subscriber_id is not None:
            return session.get(Subscriber, subscriber_id)
    if not email:
        return None
    return session.scalar(select(Subscriber).where(Subscriber.email_hash == address_hash(email)))


def addressed_by(session: Session, delivery_ids: Sequence[int]) -> dict[int, tuple[int, str]]:
    """Each of ``delivery_ids`` still held, to its campaign and the hash of the address it
    went to: what an event naming a delivery must agree with."""
    if not delivery_ids:
        return {}
    rows = session.execute(
        select(Delivery.id, Delivery.campaign_id, Subscriber.email_hash)
        .join(Subscriber, Subscriber.id == Delivery.subscriber_id)
        .where(among(session.connection(), Delivery.id, delivery_ids))
    )
    return {delivery_id: (campaign_id, email_hash) for delivery_id, campaign_id, email_hash in rows}


def unsubscribed_since(session: Session, campaign_id: int, since: dt.datetime) -> int:
    """How many of a campaign's readers have unsubscribed since ``since`` (its start)."""
    query = (
        select(func.count())
        .select_from(Delivery)
        .join(Subscriber, Subscriber.id == Delivery.subscriber_id)
        .where(
            Delivery.campaign_id == campaign_id,
            Subscriber.status == Status.UNSUBSCRIBED,
            Subscriber.unsubscribed_at >= since,
        )
    )
    return session.scalar(query) or 0


def gdpr_export(session: Session, email: str) -> dict[str, Any]:
    """Everything held about one address."""
    subscriber = find(session, email)
    suppression = suppression_of(session, email)
    activity: list[dict[str, Any]] = []
    if subscriber is not None:
        rows = session.scalars(
            select(Activity).where(Activity.subscriber_id == subscriber.id).order_by(Activity.id)
        )
        activity = [{"kind": a.kind, "at": a.at.isoformat(), "detail": a.detail} for a in rows]
    return {
        "email": email,
        "subscriber": subscriber.to_dict() if subscriber is not None else None,
        "activity": activity,
        "deliveries": _rows(session, _DELIVERIES, subscriber),
        "events": _rows(session, _EVENTS, subscriber),
        "suppression": {
            "reason": suppression.reason,
            "since": suppression.created_at.isoformat(),
            "detail": suppression.detail,
        }
        if suppression is not None
        else None,
    }


# What the sending side holds about a subscriber: the editions they were sent, and what
# their mail and their provider reported (opens, clicks, bounces, with user agents).
_DELIVERIES = text(
    "SELECT c.slug AS edition, d.status, d.sent_at FROM deliveries d "
    "JOIN campaigns c ON c.id = d.campaign_id WHERE d.subscriber_id = :id ORDER BY d.id"
)
_EVENTS = text(
    "SELECT e.kind, e.at, e.detail FROM events e JOIN deliveries d ON d.id = e.delivery_id "
    "WHERE d.subscriber_id = :id ORDER BY e.id"
)
_SCRUB_EVENTS = text(
    "UPDATE events SET detail = '{}' "
    "WHERE delivery_id IN (SELECT id FROM deliveries WHERE subscriber_id = :id)"
)
# The ledger has no foreign keys (they made filling it slow): its rows go by hand.
_DELETE_DELIVERIES = text("DELETE FROM deliveries WHERE subscriber_id = :id")


def _rows(session: Session, query: Any, subscriber: Subscriber | None) -> list[dict[str, Any]]:
    if subscriber is None:
        return []
    rows = session.execute(query, {"id": subscriber.id}).mappings()
    return [{key: _plain(value) for key, value in row.items()} for row in rows]


def _plain(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, str) and value.startswith("{"):  # JSON read back as text (SQLite)
        return json.loads(value)
    return value


def erase(session: Session, email: str) -> bool:
    """Delete everything personal about an address, keeping only its hash as suppressed.

    The hash stops a later import from adding the address again by mistake.
    """
    email_hash = lookup_hash(email)
    subscriber = find(session, email)
    suppress(session, email_hash, SuppressionReason.ERASED, "erased on request")
    if subscriber is None:
        return False
    session.execute(_SCRUB_EVENTS, {"id": subscriber.id})  # providers' payloads name them
    session.execute(_DELETE_DELIVERIES, {"id": subscriber.id})
    session.delete(subscriber)  # its activity goes with it (ON DELETE CASCADE)
    session.flush()
    return True


def remove(session: Session, email: str) -> bool:
    """Delete a subscriber added by mistake; the suppression list is left as it is."""
    subscriber = find(session, email)
    if subscriber is None:
        return False
    session.execute(_DELETE_DELIVERIES, {"id": subscriber.id})
    session.delete(subscriber)
    session.flush()
    return True
