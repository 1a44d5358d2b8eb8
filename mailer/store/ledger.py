"""Campaigns and the deliveries ledger: the truth about who got what.

A campaign is one post sent to one audience. Creating it freezes the rendered
edition, so what was previewed is what is sent. Its deliveries (one row per
subscriber, unique on campaign + subscriber) are filled by one set-based
statement and carry each reader's outcome; the queue only says which batch to
look at next, never who has been sent to.
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Iterable
from typing import Any, cast

from sqlalchemy import (
    JSON,
    Boolean,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    bindparam,
    func,
    insert,
    literal,
    select,
    true,
    update,
)
from sqlalchemy.engine import CursorResult
from sqlalchemy.orm import Mapped, Session, mapped_column

from mailer.clock import utcnow
from mailer.edition import Edition
from mailer.errors import MailerError
from mailer.store.db import Base, Id, UTCDateTime
from mailer.store.dialect import partial

__all__ = [
    "BATCH_SIZE",
    "PUBLISHED",
    "Campaign",
    "CampaignState",
    "Delivery",
    "DeliveryState",
    "Handover",
    "IllegalTransition",
    "finish_if_done",
    "handed_over",
    "may_follow",
    "move",
    "record_fill",
]

# Recipients per batch: SendGrid's most personalizations per request.
BATCH_SIZE = 1000


class CampaignState(enum.StrEnum):
    DRAFT = "draft"
    SCHEDULED = "scheduled"
    SENDING = "sending"
    PAUSED = "paused"  # by the operator, or by errors (the reason in last_error)
    # Every row has its outcome, but some readers' are unknown: settled by the provider's
    # events (then sent), or, once they are judged not sent, queued again (sending).
    UNSETTLED = "unsettled"
    SENT = "sent"  # every reader's outcome known
    CANCELLED = "cancelled"


class DeliveryState(enum.StrEnum):
    QUEUED = "queued"
    SENDING = "sending"  # claimed by a worker; the request may be in flight
    SENT = "sent"
    FAILED = "failed"
    UNKNOWN = "unknown"  # the request went out, no answer came: a timeout, a dead worker
    SKIPPED = "skipped"  # left the list after the ledger was filled


# What may follow what: the only truth about it. ``move`` reads it, nothing else writes a
# campaign's status. (There was a "failed" state that nothing ever set: a campaign that
# cannot go on is paused, with the reason, for the operator.)
_LEGAL = {
    CampaignState.DRAFT: {CampaignState.SCHEDULED, CampaignState.SENDING, CampaignState.CANCELLED},
    CampaignState.SCHEDULED: {
        CampaignState.SCHEDULED,  # scheduled again, for another time
        CampaignState.SENDING,
        CampaignState.CANCELLED,
        CampaignState.DRAFT,
    },
    CampaignState.SENDING: {
        CampaignState.PAUSED,
        CampaignState.UNSETTLED,
        CampaignState.SENT,
        CampaignState.CANCELLED,
    },
    CampaignState.PAUSED: {CampaignState.SENDING, CampaignState.CANCELLED},
    CampaignState.UNSETTLED: {CampaignState.SENT, CampaignState.SENDING},
    CampaignState.SENT: set(),
    CampaignState.CANCELLED: set(),
}
# The same table read backwards: the states each state may follow.
_FOLLOWS = {to: {s for s, nexts in _LEGAL.items() if to in nexts} for to in CampaignState}

# States in which no batch goes out: the send has ended, for now or for good.
_ENDED = (CampaignState.UNSETTLED, CampaignState.SENT, CampaignState.CANCELLED)


class IllegalTransition(MailerError):
    pass


class Campaign(Base):
    __tablename__ = "campaigns"
    # One live campaign per post: starting the same post twice finds the first one.
    __table_args__ = (
        Index(
            "uq_campaigns_slug_live",
            "slug",
            unique=True,
            **partial("status != 'cancelled'"),
        ),
        {"sqlite_autoincrement": True},  # ids are in links: never reuse one
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    slug: Mapped[str] = mapped_column(String(200))
    post_path: Mapped[str] = mapped_column(String(500), default="")
    subject: Mapped[str] = mapped_column(String(500))
    edition: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16), default=CampaignState.DRAFT)
    backend: Mapped[str] = mapped_column(String(20))
    batch_size: Mapped[int] = mapped_column(Integer, default=BATCH_SIZE)
    # Open pixel and click redirects in this campaign's mail (off: neither).
    tracking: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())
    # The ledger holds the whole audience (it is filled a chunk at a time, while sending).
    filled: Mapped[bool] = mapped_column(Boolean, default=False, server_default=true())
    batches: Mapped[int] = mapped_column(Integer, default=0)
    recipients: Mapped[int] = mapped_column(Integer, default=0)
    errors: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    scheduled_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    started_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)

    def frozen_edition(self) -> Edition:
        return Edition.from_dict(self.edition)


# A campaign that went out, even in part: its readers follow "view in browser", and lint
# compares a new post with the last one. By the states it cannot be in, so a row from an
# older version, in a state since retired, counts too.
PUBLISHED = Campaign.started_at.is_not(None) & Campaign.status.not_in(
    (CampaignState.DRAFT, CampaignState.SCHEDULED)
)


class Delivery(Base):
    __tablename__ = "deliveries"
    __table_args__ = (
        UniqueConstraint("campaign_id", "subscriber_id"),
        # The claim: the queued rows of one batch of one campaign. Partial, like the next
        # one, so that the two updates of each row (claimed, then sent) touch few indexes.
        Index(
            "ix_deliveries_queued",
            "campaign_id",
            "batch",
            **partial("status = 'queued'"),
        ),
        # "Is anything of this campaign still open?", asked after every batch. With the
        # batch too, so that even without statistics it is never worse for the claim.
        Index(
            "ix_deliveries_open",
            "campaign_id",
            "batch",
            **partial("status IN ('queued', 'sending')"),
        ),
        # The rows waiting to be settled: few, looked for by every sweep and every finish.
        Index(
            "ix_deliveries_unknown",
            "campaign_id",
            **partial("status = 'unknown'"),
        ),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    # No foreign keys (migration 0005): the fill takes both ids from their tables in the
    # same statement, and the keys' checks were most of its cost. Deleting a subscriber
    # deletes their deliveries (subscribers.store).
    campaign_id: Mapped[int] = mapped_column(Id)
    subscriber_id: Mapped[int] = mapped_column(Id)
    batch: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(10), default=DeliveryState.QUEUED)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    claimed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    sent_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    provider_id: Mapped[str] = mapped_column(String(200), default="")
    error: Mapped[str] = mapped_column(Text, default="")


class Handover(Base):
    """When each batch was last handed to the queue: a queued batch handed over long ago
    has lost its broker message, while one handed over lately waits its turn."""

    __tablename__ = "handovers"

    campaign_id: Mapped[int] = mapped_column(Id, primary_key=True)
    batch: Mapped[int] = mapped_column(Integer, primary_key=True)
    # When its task was handed over, or, for a task retrying later, when it is due.
    handed_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)


def handed_over(
    session: Session, campaign_id: int, batches: Iterable[int], at: dt.datetime
) -> None:
    """Note that tasks for ``batches`` are in the broker, due at ``at``."""
    batches = list(batches)
    if batches:
        session.execute(
            update(Handover)
            .where(Handover.campaign_id == campaign_id, Handover.batch.in_(batches))
            .values(handed_at=at)
        )


def may_follow(current: str, to: CampaignState) -> bool:
    """Whether the table lets a campaign in ``current`` become ``to``."""
    return current in _FOLLOWS[to]


def move(
    session: Session,
    campaign_id: int,
    to: CampaignState,
    *,
    only_from: Iterable[CampaignState] = (),
    strict: bool = True,
    **values: Any,
) -> bool:
    """Move a campaign to ``to``, writing ``values`` with it: the only writer of a
    campaign's status. Returns whether it moved.

    One conditional UPDATE (``WHERE status IN`` the states ``to`` may follow, or those of
    them in ``only_from``) decides, so of two processes that move one campaign at once,
    on PostgreSQL or SQLite, only one does: the other's statement finds the campaign
    moved already and changes nothing. What it did not move, ``strict`` says in an
    ``IllegalTransition`` naming the state the campaign is in; else it returns False.
    """
    sources = _FOLLOWS[to] & set(only_from) if only_from else _FOLLOWS[to]
    now = literal(utcnow(), UTCDateTime())
    if to == CampaignState.SENDING:
        values = {
            "started_at": func.coalesce(Campaign.started_at, now),
            "finished_at": None,
            **values,
        }
    elif to in _ENDED:  # unsettled → sent keeps the end it had
        values = {"finished_at": func.coalesce(Campaign.finished_at, now), **values}
    statement = (
        update(Campaign)
        .where(Campaign.id == campaign_id, Campaign.status.in_(sorted(sources)))
        .values(status=to, **values)
        .execution_options(synchronize_session="fetch")
    )
    # Session.execute's stubs say Result, but an UPDATE's is a CursorResult, with a rowcount
    # (SQLAlchemy's own docs say so; sqlalchemy/sqlalchemy#9185).
    moved = cast(CursorResult[Any], session.execute(statement)).rowcount
    if moved or not strict:
        return bool(moved)
    current = session.scalar(select(Campaign.status).where(Campaign.id == campaign_id))
    if current is None:
        raise MailerError(f"no campaign {campaign_id}: see `mailer campaigns list`")
    raise IllegalTransition(f"campaign {campaign_id} is {current}: it cannot become {to}")


def finish_if_done(session: Session, campaign_id: int) -> bool:
    """End a sending campaign once no row is queued or in flight: ``sent`` if every reader's
    outcome is known, else ``unsettled``; an unsettled one is sent once its last unknown row
    settles. Returns whether the campaign changed state.

    Called after every batch, so the usual answer ("rows are still open") comes from an
    unlocked EXISTS on a partial index; the campaign row is locked, and the question
    asked again, only when it looks finished.
    """
    if _has_rows(session, campaign_id, DeliveryState.QUEUED, DeliveryState.SENDING):
        return False
    campaign = session.execute(
        select(Campaign.status, Campaign.filled).where(Campaign.id == campaign_id).with_for_update()
    ).one_or_none()
    if campaign is None or not campaign.filled:
        return False
    if campaign.status not in (CampaignState.SENDING, CampaignState.UNSETTLED):
        return False
    if _has_rows(session, campaign_id, DeliveryState.QUEUED, DeliveryState.SENDING):
        return False
    unknown = _has_rows(session, campaign_id, DeliveryState.UNKNOWN)
    done = CampaignState.UNSETTLED if unknown else CampaignState.SENT
    if campaign.status == done:
        return False
    return move(session, campaign_id, done, only_from=[campaign.status], strict=False)


def _has_rows(session: Session, campaign_id: int, *states: DeliveryState) -> bool:
    """Whether the campaign has a row in one of ``states``: its first one in batch order,
    which only a partial index of those states gives cheaply. Not an EXISTS, which the
    planner may answer with a Seq Scan it prices as meeting a row in its first pages (as if
    the rows were spread evenly), and which reads the whole ledger when they are not there.
    The states and the limit are written into the statement, so that a plan made for any
    campaign (a prepared statement's generic plan) still matches the partial index."""
    listed = [state.value for state in states]
    first = (
        select(Delivery.batch)
        .where(
            Delivery.campaign_id == campaign_id,
            Delivery.status.in_(bindparam("states", listed, expanding=True, literal_execute=True)),
        )
        .order_by(Delivery.batch)
        .limit(bindparam("first", 1, literal_execute=True))
    )
    return session.scalar(first) is not None


def record_fill(session: Session, campaign: Campaign, added: int, asked: int) -> range:
    """Note a chunk of the audience just queued (``added`` rows of the ``asked`` for, numbered
    from ``campaign.batches`` on): the campaign's counts, kept as it goes (counted from the
    ledger, each chunk would read the whole campaign again); the ledger complete once a
    chunk comes back short; each new batch handed over now. Returns the new batches. The
    caller hands them to the queue once this commits; if it never does (it crashed in
    between), the sweep finds the batches lost."""
    first_batch = campaign.batches
    campaign.recipients += added
    campaign.batches += -(-added // campaign.batch_size)  # the last batch may be short
    campaign.filled = added < asked
    batches = range(first_batch, campaign.batches)
    if batches:
        now = utcnow()
        session.execute(
            insert(Handover),
            [{"campaign_id": campaign.id, "batch": b, "handed_at": now} for b in batches],
        )
    return batches
