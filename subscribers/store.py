"""Every query on subscribers. Callers hand in a Session and commit; nothing here commits.

The invariant this module keeps: an address that unsubscribed, bounced hard,
complained or was erased is in the suppression list, and nothing here (an add, an
import, a form) takes it out again.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import exists, func, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from mailer.clock import utcnow
from mailer.headers import check_header_text
from subscribers.addresses import address_hash, lookup_hash, normalize
from subscribers.models import Activity, Status, Subscriber, Suppression, SuppressionReason

__all__ = [
    "AddResult",
    "Consent",
    "Recipient",
    "add",
    "clean_name",
    "confirm",
    "count_by_status",
    "erase",
    "find",
    "gdpr_export",
    "iter_recipients",
    "record",
    "remove",
    "suppress",
    "suppression_of",
    "unsubscribe",
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


@dataclass(frozen=True)
class Recipient:
    id: int
    email: str
    name: str


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


def iter_recipients(sessions: sessionmaker, page: int = 1000) -> Iterator[Recipient]:
    """Confirmed, not suppressed subscribers in id order, a keyset page at a time.

    Each page is its own short query, so memory stays flat however long the list,
    and no transaction stays open while the caller works on a page.
    """
    last_id = 0
    query = (
        select(Subscriber.id, Subscriber.email, Subscriber.name)
        .where(Subscriber.status == Status.CONFIRMED)
        .where(~exists().where(Suppression.email_hash == Subscriber.email_hash))
        .order_by(Subscriber.id)
        .limit(page)
    )
    while True:
        with sessions() as session:
            rows = session.execute(query.where(Subscriber.id > last_id)).all()
        if not rows:
            return
        for row in rows:
            yield Recipient(row.id, row.email, row.name)
        last_id = rows[-1].id


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
