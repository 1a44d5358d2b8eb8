"""A report finds its delivery and becomes the event a provider's webhook would have sent.

Only two things tie a report to one of our deliveries, and neither can be forged by
someone who has not seen that reader's copy: our signed VERP address (the address it
came back to), or, failing that, the quoted original's Message-ID, which must equal the
one the ledger recorded for that copy (its random part included). The reader's address
as the report gives it is kept for the record but trusted for nothing: forwarding
rewrites it, and anyone can write one. The event is stored once per report (its own
Message-ID is the event id), so a report read twice changes nothing the second time.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from mailer.bounces.mailbox import UNPARSEABLE
from mailer.bounces.report import NotAReport, Report, parse
from mailer.clock import utcnow
from mailer.config import Settings
from mailer.delivery.message import message_id_ids
from mailer.delivery.verp import Verp
from mailer.sending import brake
from mailer.store.ledger import Delivery
from mailer.tracking.events import Event, EventKind, apply, record

__all__ = ["Ingested", "ingest", "ingest_message"]

log = logging.getLogger(__name__)
SOURCE = "mailbox"

_EVENTS: dict[str, tuple[EventKind, Literal["hard", "soft", "block", ""]]] = {
    "hard": (EventKind.BOUNCED, "hard"),
    "soft": (EventKind.BOUNCED, "soft"),
    "block": (EventKind.BOUNCED, "block"),
    "complaint": (EventKind.COMPLAINED, ""),
    "delayed": (EventKind.DEFERRED, ""),
    "delivered": (EventKind.DELIVERED, ""),
}


@dataclass(frozen=True)
class Ingested:
    # The report's kind, or "unmatched" (none of ours) or "duplicate" (read before).
    outcome: str
    campaign_id: int | None = None


def ingest(session: Session, verp: Verp, report: Report, soft_bounce_limit: int) -> Ingested:
    """Record ``report`` against its delivery and apply it (suppress, count a soft bounce)."""
    found = _delivery(session, verp, report)
    if found is None:
        return Ingested("unmatched")
    campaign_id, delivery_id = found
    kind, bounce = _EVENTS[report.kind]
    event = Event(
        kind=kind,
        at=utcnow(),
        source=SOURCE,
        campaign_id=campaign_id,
        delivery_id=delivery_id,
        provider_event_id=f"{SOURCE}:{report.report_id}"[:100],
        bounce=bounce,
        raw=report.detail(),
    )
    new = record(session, [event])
    if not new:
        return Ingested("duplicate", campaign_id)
    apply(session, new, soft_bounce_limit)
    return Ingested(report.kind, campaign_id)


def ingest_message(sessions: sessionmaker, settings: Settings, verp: Verp, data: bytes) -> str:
    """Read, record and apply one returned message; then the brake looks at its campaign.
    Returns what it was: a report's kind, "unmatched", "duplicate" or "unparseable"."""
    try:
        report = parse(data)
    except NotAReport as exc:
        log.info("bounce mailbox: a message that is no report (%s)", exc)
        return UNPARSEABLE
    with sessions.begin() as session:
        done = ingest(session, verp, report, settings.soft_bounce_limit)
        if done.campaign_id is not None and done.outcome in ("hard", "soft", "complaint"):
            brake.check(session, settings, done.campaign_id)
    return done.outcome


def _delivery(session: Session, verp: Verp, report: Report) -> tuple[int, int] | None:
    """(campaign id, delivery id) of the copy the report is about, if it is one of ours.
    A genuine address may outlive its row (a reader erased since, a database reset)."""
    for address in report.returned_to:
        ids = verp.parse(address)
        if ids is not None and _recorded(session, *ids) is not None:
            return ids
    for message_id in report.original_ids:
        ids = message_id_ids(message_id)
        if ids is not None and _recorded(session, *ids) == message_id:
            return ids
    return None


def _recorded(session: Session, campaign_id: int, delivery_id: int) -> str | None:
    """The Message-ID the ledger recorded for this copy ("" if none yet); None: no such row."""
    return session.scalars(
        select(Delivery.provider_id).where(
            Delivery.id == delivery_id, Delivery.campaign_id == campaign_id
        )
    ).first()
