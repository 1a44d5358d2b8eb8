"""The reputation brake: a campaign whose bounces or complaints climb pauses itself.

Mailbox providers judge a sender by the share of its mail that bounces (an old or bought
list) and that readers mark as spam (Gmail's bulk-sender limit is 0.3%). Past either
threshold (``MAILER_BRAKE_*``), a sending campaign pauses with a reason that says which
rate and what to look at, before the rest of the list sees the sender blocked. It is
checked after each batch's outcomes are recorded and whenever a bounce or complaint
arrives (webhook or bounce mailbox). ``mailer campaigns resume ID --force`` releases it
for that campaign; a plain resume of a braked campaign is refused.

Hard bounces are the campaign's readers whose address does not exist, by the bounce's
stored type (``mailer.tracking.reputation``); soft bounces, even past the soft-bounce
limit, and blocks (refused by policy) are not. Its counts come from the events' index; the
ledger is counted only once they could be over a threshold, so the check costs two
indexed counts per batch.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass

from sqlalchemy import Text, func, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from mailer.clock import utcnow
from mailer.config import Settings
from mailer.errors import MailerError
from mailer.store.db import Base, Id, UTCDateTime
from mailer.store.ledger import Campaign, CampaignState, Delivery, DeliveryState, move
from mailer.tracking.events import EventKind
from mailer.tracking.reputation import BrakeView, complaints, hard_bounces

__all__ = [
    "WATCHED",
    "BrakeEngaged",
    "CampaignBrake",
    "Rates",
    "check",
    "describe",
    "rates",
    "release",
    "view",
]

log = logging.getLogger(__name__)

# The events after which the brake looks again.
WATCHED = frozenset({EventKind.BOUNCED, EventKind.COMPLAINED})


class BrakeEngaged(MailerError):
    """A plain resume of a campaign the brake stopped."""


class CampaignBrake(Base):
    """A campaign the brake stopped, or the operator let go on past it (one row each)."""

    __tablename__ = "campaign_brakes"

    campaign_id: Mapped[int] = mapped_column(Id, primary_key=True)
    tripped_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    reason: Mapped[str] = mapped_column(Text, default="")
    released_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)


@dataclass(frozen=True)
class Rates:
    attempted: int  # sent, failed or unknown
    delivered: int  # accepted (sent)
    hard_bounces: int
    complaints: int


def _event_counts(session: Session, campaign_id: int) -> tuple[int, int]:
    """(hard bounces, complaints) of the campaign, each reader counted once."""
    return hard_bounces(session, campaign_id), complaints(session, campaign_id)


def rates(session: Session, campaign_id: int, events: tuple[int, int] | None = None) -> Rates:
    """The campaign's rates; ``events`` are its event counts when already counted."""
    counts = dict(
        session.execute(
            select(Delivery.status, func.count())
            .where(Delivery.campaign_id == campaign_id)
            .group_by(Delivery.status)
        ).all()
    )
    sent = counts.get(DeliveryState.SENT, 0)
    attempted = sent + counts.get(DeliveryState.FAILED, 0) + counts.get(DeliveryState.UNKNOWN, 0)
    return Rates(attempted, sent, *(events or _event_counts(session, campaign_id)))


def _verdict(r: Rates, s: Settings, campaign_id: int) -> str | None:
    """Why the brake stops the campaign, or None."""
    go_on = f"then `mailer campaigns resume {campaign_id} --force` goes on past the brake"
    if r.attempted >= s.brake_bounce_min_attempted and (
        r.hard_bounces > s.brake_bounce_rate * r.attempted
    ):
        return (
            f"reputation brake: {r.hard_bounces:,} of {r.attempted:,} messages bounced hard "
            f"({r.hard_bounces / r.attempted:.1%}), over MAILER_BRAKE_BOUNCE_RATE "
            f"({s.brake_bounce_rate:.1%}): check where these addresses came from (an old or "
            f"bought list?) and the bounced readers in `mailer stats {campaign_id}`; {go_on}"
        )
    if r.delivered >= s.brake_complaint_min_delivered and (
        r.complaints > s.brake_complaint_rate * r.delivered
    ):
        return (
            f"reputation brake: {r.complaints:,} of {r.delivered:,} delivered messages drew a "
            f"spam complaint ({r.complaints / r.delivered:.2%}), over "
            f"MAILER_BRAKE_COMPLAINT_RATE ({s.brake_complaint_rate:.2%}; Gmail's limit is "
            f"0.3%): check that these readers asked for this list, that the unsubscribe link "
            f"is plain to see, and what this issue says; {go_on}"
        )
    return None


def check(session: Session, s: Settings, campaign_id: int) -> str | None:
    """Pause ``campaign_id`` if it is sending and over a threshold (in ``session``'s
    transaction, with what it has recorded); returns the reason."""
    hard, complaints = _event_counts(session, campaign_id)
    if (
        hard <= s.brake_bounce_rate * s.brake_bounce_min_attempted
        and complaints <= s.brake_complaint_rate * s.brake_complaint_min_delivered
    ):
        return None  # too few to be over a threshold, whatever the ledger says
    brake = session.get(CampaignBrake, campaign_id)
    if brake is not None and brake.released_at is not None:
        return None
    status = session.scalar(select(Campaign.status).where(Campaign.id == campaign_id))
    if status != CampaignState.SENDING:
        return None
    reason = _verdict(rates(session, campaign_id, (hard, complaints)), s, campaign_id)
    if reason is None:
        return None
    paused = move(
        session,
        campaign_id,
        CampaignState.PAUSED,
        only_from=(CampaignState.SENDING,),
        strict=False,
        last_error=reason,
    )
    if not paused:  # paused or cancelled meanwhile: not the brake's doing
        return None
    if brake is None:
        session.add(CampaignBrake(campaign_id=campaign_id, tripped_at=utcnow(), reason=reason))
    else:
        brake.tripped_at, brake.reason = utcnow(), reason
    log.warning("campaign %s paused: %s", campaign_id, reason)
    return reason


def release(session: Session, campaign_id: int, force: bool) -> None:
    """Before a resume: a campaign the brake stopped goes on only with ``force``, which
    releases the brake for it for good."""
    brake = session.get(CampaignBrake, campaign_id, with_for_update=True)
    if force:
        if brake is None:
            session.add(CampaignBrake(campaign_id=campaign_id, released_at=utcnow()))
        elif brake.released_at is None:
            brake.released_at = utcnow()
        return
    if brake is not None and brake.tripped_at is not None and brake.released_at is None:
        what, _, why = brake.reason.partition(": ")
        raise BrakeEngaged(f"campaign {campaign_id} was paused by the {what}: {why}")


def view(session: Session, settings: Settings, campaign_id: int) -> BrakeView:
    """The brake's thresholds for the campaign and what it did, for the stats."""
    limits = (
        settings.brake_bounce_rate,
        settings.brake_bounce_min_attempted,
        settings.brake_complaint_rate,
        settings.brake_complaint_min_delivered,
    )
    brake = session.get(CampaignBrake, campaign_id)
    if brake is not None and brake.released_at is not None:
        return BrakeView(*limits, "released", brake.released_at, brake.reason)
    if brake is not None and brake.tripped_at is not None:
        return BrakeView(*limits, "engaged", brake.tripped_at, brake.reason)
    return BrakeView(*limits, "off")


def describe(session: Session, settings: Settings, campaign_id: int) -> str:
    """The brake's state for ``campaigns show``: what it measures, against what."""
    r = rates(session, campaign_id)
    bounce = r.hard_bounces / r.attempted if r.attempted else 0.0
    complaint = r.complaints / r.delivered if r.delivered else 0.0
    measured = (
        f"hard bounces {r.hard_bounces:,} of {r.attempted:,} ({bounce:.1%}; brakes over "
        f"{settings.brake_bounce_rate:.1%} from {settings.brake_bounce_min_attempted:,}), "
        f"complaints {r.complaints:,} of {r.delivered:,} ({complaint:.2%}; brakes over "
        f"{settings.brake_complaint_rate:.2%} from {settings.brake_complaint_min_delivered:,})"
    )
    state = view(session, settings, campaign_id)
    if state.state == "engaged":  # the reason is the campaign's last error, shown beside
        return f"engaged {state.since:%Y-%m-%d %H:%M} UTC; {measured}"
    return f"{state.shown()}; {measured}"
