"""What happened after the send, in one vocabulary, stored once, and what it changes.

Opens and clicks from our own tracking and every provider's webhook events become
the same ``Event``; they are stored once (a provider's event id is unique, so its
retries and duplicates change nothing) with the raw payload kept. Bounces,
complaints and unsubscribes take the address off the list at once, and a
``processed`` or ``delivered`` event settles a delivery whose outcome was unknown.
A provider's event counts for a delivery only if it names that delivery's address.
"""

from __future__ import annotations

import datetime as dt
import enum
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from sqlalchemy import JSON, Boolean, Index, Integer, String, exists, update
from sqlalchemy.orm import Mapped, Session, mapped_column

from mailer.store.db import Base, Id, UTCDateTime
from mailer.store.dialect import append_rows, insert_or_skip
from mailer.store.ledger import Delivery, DeliveryState, finish_if_done
from subscribers import store
from subscribers.addresses import lookup_hash
from subscribers.models import Status

__all__ = ["Event", "EventKind", "EventRecord", "addressed", "apply", "record", "settle_unknown"]

log = logging.getLogger(__name__)


class EventKind(enum.StrEnum):
    PROCESSED = "processed"  # the provider accepted the message
    DELIVERED = "delivered"
    OPENED = "opened"
    CLICKED = "clicked"
    BOUNCED = "bounced"
    DEFERRED = "deferred"
    DROPPED = "dropped"
    COMPLAINED = "complained"
    UNSUBSCRIBED = "unsubscribed"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class Event:
    """One normalised event, from our tracking or from a provider."""

    kind: EventKind
    at: dt.datetime
    source: str
    campaign_id: int | None = None
    delivery_id: int | None = None
    email: str = ""
    provider_event_id: str | None = None
    position: int | None = None  # the clicked link, in the campaign's link table
    machine: bool = False  # an open by a privacy proxy or scanner
    # hard: the address does not exist; soft: try later; block: refused by policy
    bounce: Literal["hard", "soft", "block", ""] = ""
    raw: dict[str, Any] = field(default_factory=dict)


class EventRecord(Base):
    __tablename__ = "events"
    __table_args__ = (Index("ix_events_campaign_id_kind", "campaign_id", "kind"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    campaign_id: Mapped[int | None] = mapped_column(Id)
    delivery_id: Mapped[int | None] = mapped_column(Id, index=True)
    position: Mapped[int | None] = mapped_column(Integer)
    machine: Mapped[bool] = mapped_column(Boolean, default=False)
    source: Mapped[str] = mapped_column(String(16))
    bounce: Mapped[str | None] = mapped_column(String(8))  # a bounce's type, as on Event
    provider_event_id: Mapped[str | None] = mapped_column(String(100), unique=True)
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


def addressed(session: Session, events: Sequence[Event]) -> list[Event]:
    """``events`` less those naming one of our deliveries with another campaign or address
    than it was sent to (logged): a delivery id alone must not let an event unsubscribe,
    or settle the delivery of, another reader. Addresses compare normalised, in any case.
    """
    ids = {e.delivery_id for e in events if e.delivery_id is not None}
    if not ids:
        return list(events)
    sent = store.addressed_by(session, sorted(ids))
    kept = []
    for event in events:
        to = sent.get(event.delivery_id) if event.delivery_id is not None else None
        if to is None or to == (event.campaign_id, lookup_hash(event.email)):
            kept.append(event)
        else:
            log.warning(
                "%s %s event ignored: delivery %s was not sent to its address in campaign %s",
                event.source,
                event.kind,
                event.delivery_id,
                event.campaign_id,
            )
    return kept


def record(session: Session, events: Sequence[Event]) -> list[Event]:
    """Store ``events``; returns those that were new (a provider's repeats are dropped,
    within this batch as well as across batches).

    Our own tracking events have no provider id and cannot repeat: they go in without a
    conflict check, by the cheapest write there is (the tracking server does it twice a
    second).
    """
    ours = [e for e in events if e.provider_event_id is None]
    first: dict[str, Event] = {}
    for event in events:
        if event.provider_event_id is not None:
            first.setdefault(event.provider_event_id, event)
    theirs = list(first.values())
    connection = session.connection()
    # The tracking server's requests wait while a flush holds the interpreter: the
    # cheapest write there is (COPY on PostgreSQL).
    append_rows(connection, EventRecord.__table__, [_row(e) for e in ours])
    stored: set[str | None] = set()
    if theirs:
        statement = insert_or_skip(
            connection, EventRecord.__table__, ["provider_event_id"]
        ).returning(EventRecord.provider_event_id)
        rows = [{**_row(e), "provider_event_id": e.provider_event_id} for e in theirs]
        stored = {pid for (pid,) in connection.execute(statement, rows)}
    return ours + [e for e in theirs if e.provider_event_id in stored]


def _row(event: Event) -> dict[str, Any]:
    """An event as its stored row (without a provider's event id, which ours have not)."""
    return {
        "kind": str(event.kind),
        "at": event.at,
        "campaign_id": event.campaign_id,
        "delivery_id": event.delivery_id,
        "position": event.position,
        "machine": event.machine,
        "source": event.source,
        # A bounce without a type is applied as a hard one (_clean_list) and stored so.
        "bounce": (event.bounce or "hard") if event.kind == EventKind.BOUNCED else None,
        "detail": event.raw,
    }


_LIST_CLEANING = {
    EventKind.BOUNCED,
    EventKind.COMPLAINED,
    EventKind.UNSUBSCRIBED,
    EventKind.DROPPED,
}


def apply(session: Session, events: Sequence[Event], soft_bounce_limit: int) -> None:
    """What events change: the list cleans itself, unknown deliveries get settled."""
    accepted = []
    for event in events:
        if event.kind in _LIST_CLEANING:
            _clean_list(session, event, soft_bounce_limit)
        elif event.kind in (EventKind.PROCESSED, EventKind.DELIVERED) and event.delivery_id:
            accepted.append(event.delivery_id)
    settle_unknown(session, delivery_ids=accepted)
    delivered = [e.delivery_id for e in events if e.kind == EventKind.DELIVERED and e.delivery_id]
    store.forgive_soft_bounces(session, delivered)


def _clean_list(session: Session, event: Event, soft_bounce_limit: int) -> None:
    subscriber = store.reader_of(session, event.delivery_id, event.email)
    if subscriber is None:
        return
    how = f"{event.source} {event.kind}"
    if event.kind == EventKind.COMPLAINED:
        store.unsubscribe(session, subscriber, how, Status.COMPLAINED)
    elif event.kind == EventKind.UNSUBSCRIBED:
        store.unsubscribe(session, subscriber, how)
    elif event.kind == EventKind.DROPPED:
        reason = str(event.raw.get("reason", "")).lower()
        if "spam" in reason:
            store.unsubscribe(session, subscriber, how, Status.COMPLAINED)
        elif "unsubscribe" in reason:
            store.unsubscribe(session, subscriber, how)
        elif "bounce" in reason or "invalid" in reason:
            store.unsubscribe(session, subscriber, how, Status.BOUNCED)
    elif event.bounce == "soft":
        bounces = store.soft_bounce(session, subscriber)
        if bounces >= soft_bounce_limit:
            how = f"{how} ({bounces} soft bounces)"
            store.unsubscribe(session, subscriber, how, Status.BOUNCED)
    elif event.bounce == "block":  # refused by policy: about the mail or the sender, and
        # suppressing would take good readers off the list whenever a provider blocks us
        store.record(session, subscriber.id, "blocked", source=how)
    else:
        store.unsubscribe(session, subscriber, how, Status.BOUNCED)


def settle_unknown(
    session: Session, campaign_id: int | None = None, delivery_ids: Sequence[int] | None = None
) -> int:
    """Deliveries whose outcome was unknown but that the provider reports accepting are sent:
    of one campaign, or only the given deliveries (which keeps the statement small), or of
    every campaign. Whenever a row becomes unknown its stored events must be asked, since
    they may have come while it was in flight. A campaign whose last unknown row this
    settles is sent. Returns how many rows it settled."""
    if delivery_ids is not None and not delivery_ids:
        return 0
    accepted = exists().where(
        EventRecord.delivery_id == Delivery.id,
        EventRecord.kind.in_((EventKind.PROCESSED, EventKind.DELIVERED)),
    )
    statement = (
        update(Delivery)
        .where(Delivery.status == DeliveryState.UNKNOWN, accepted)
        .values(status=DeliveryState.SENT, error="settled from the provider's events")
        .returning(Delivery.campaign_id)
        .execution_options(synchronize_session=False)
    )
    if campaign_id is not None:
        statement = statement.where(Delivery.campaign_id == campaign_id)
    if delivery_ids is not None:
        statement = statement.where(Delivery.id.in_(delivery_ids))
    campaigns = list(session.scalars(statement))
    for settled_campaign in sorted(set(campaigns)):  # in id order: two settlers cannot deadlock
        finish_if_done(session, settled_campaign)
    return len(campaigns)
