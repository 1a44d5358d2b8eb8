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
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    exists,
    insert,
    select,
    text,
    true,
    update,
)
from sqlalchemy.orm import Mapped, Session, mapped_column

from mailer.clock import utcnow
from mailer.content.edition import Edition
from mailer.errors import MailerError
from mailer.store.db import Base, Id, UTCDateTime

__all__ = [
    "BATCH_SIZE",
    "Campaign",
    "CampaignState",
    "Delivery",
    "DeliveryState",
    "Handover",
    "IllegalTransition",
    "fill_chunk",
    "finish_if_done",
    "handed_over",
    "transition",
]

# Recipients per batch: SendGrid's most personalizations per request.
BATCH_SIZE = 1000


class CampaignState(enum.StrEnum):
    DRAFT = "draft"
    SCHEDULED = "scheduled"
    SENDING = "sending"
    PAUSED = "paused"
    # Every row has its outcome, but some readers' are unknown: settled by the provider's
    # events (then sent), or, once they are judged not sent, queued again (sending).
    UNSETTLED = "unsettled"
    SENT = "sent"  # every reader's outcome known
    CANCELLED = "cancelled"
    FAILED = "failed"


class DeliveryState(enum.StrEnum):
    QUEUED = "queued"
    SENDING = "sending"  # claimed by a worker; the request may be in flight
    SENT = "sent"
    FAILED = "failed"
    UNKNOWN = "unknown"  # the request went out, no answer came: a timeout, a dead worker
    SKIPPED = "skipped"  # left the list after the ledger was filled


_LEGAL = {
    CampaignState.DRAFT: {CampaignState.SCHEDULED, CampaignState.SENDING, CampaignState.CANCELLED},
    CampaignState.SCHEDULED: {CampaignState.SENDING, CampaignState.CANCELLED, CampaignState.DRAFT},
    CampaignState.SENDING: {
        CampaignState.PAUSED,
        CampaignState.UNSETTLED,
        CampaignState.SENT,
        CampaignState.CANCELLED,
        CampaignState.FAILED,
    },
    CampaignState.PAUSED: {CampaignState.SENDING, CampaignState.CANCELLED},
    CampaignState.UNSETTLED: {CampaignState.SENT, CampaignState.SENDING},
    CampaignState.SENT: set(),
    CampaignState.CANCELLED: set(),
    CampaignState.FAILED: {CampaignState.SENDING, CampaignState.CANCELLED},
}


# States in which no batch goes out: the send has ended, for now or for good.
_ENDED = (
    CampaignState.UNSETTLED,
    CampaignState.SENT,
    CampaignState.CANCELLED,
    CampaignState.FAILED,
)


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
            sqlite_where=text("status != 'cancelled'"),
            postgresql_where=text("status != 'cancelled'"),
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
            sqlite_where=text("status = 'queued'"),
            postgresql_where=text("status = 'queued'"),
        ),
        # "Is anything of this campaign still open?", asked after every batch. With the
        # batch too, so that even without statistics it is never worse for the claim.
        Index(
            "ix_deliveries_open",
            "campaign_id",
            "batch",
            sqlite_where=text("status IN ('queued', 'sending')"),
            postgresql_where=text("status IN ('queued', 'sending')"),
        ),
        # The rows waiting to be settled: few, looked for by every sweep and every finish.
        Index(
            "ix_deliveries_unknown",
            "campaign_id",
            sqlite_where=text("status = 'unknown'"),
            postgresql_where=text("status = 'unknown'"),
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


def transition(campaign: Campaign, to: CampaignState) -> None:
    """Move a campaign to ``to`` if that is a legal step from where it is."""
    current = CampaignState(campaign.status)
    if to not in _LEGAL[current]:
        raise IllegalTransition(f"campaign {campaign.id} is {current}: it cannot become {to}")
    campaign.status = to
    now = utcnow()
    if to == CampaignState.SENDING:
        campaign.started_at = campaign.started_at or now
        campaign.finished_at = None
    elif to in _ENDED and campaign.finished_at is None:  # unsettled → sent keeps the end
        campaign.finished_at = now


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
    campaign = session.get(Campaign, campaign_id, with_for_update=True)
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
    transition(campaign, done)
    return True


def _has_rows(session: Session, campaign_id: int, *states: DeliveryState) -> bool:
    found = exists().where(Delivery.campaign_id == campaign_id, Delivery.status.in_(states))
    return bool(session.scalar(select(found)))


# The next chunk of the audience: confirmed, not suppressed subscribers after the last
# one queued, numbered into batches in id order; one statement, no Python loop over
# subscribers. Readers an earlier (cancelled) campaign of the same post reached, or may
# have, are left out.
_FILL_CHUNK = text(
    """
    INSERT INTO deliveries (campaign_id, subscriber_id, batch, status, attempts, provider_id, error)
    SELECT :campaign_id, t.id,
           (SELECT COALESCE(MAX(batch) + 1, 0) FROM deliveries WHERE campaign_id = :campaign_id)
           + (ROW_NUMBER() OVER (ORDER BY t.id) - 1) / :batch_size,
           'queued', 0, '', ''
    FROM (
      SELECT s.id FROM subscribers s
      WHERE s.status = 'confirmed'
        AND s.id > (SELECT COALESCE(MAX(subscriber_id), 0) FROM deliveries
                    WHERE campaign_id = :campaign_id)
        AND NOT EXISTS (SELECT 1 FROM suppressions x WHERE x.email_hash = s.email_hash)
        AND NOT EXISTS (
          SELECT 1 FROM deliveries e JOIN campaigns c ON c.id = e.campaign_id
          WHERE c.slug = :slug AND e.subscriber_id = s.id
            AND e.status IN ('sent', 'sending', 'unknown'))
      ORDER BY s.id
      LIMIT :chunk
    ) t
    """
)
# Batches queued per chunk: sending starts after the first chunk, not after the last.
CHUNK_BATCHES = 100


def fill_chunk(session: Session, campaign: Campaign) -> range:
    """Queue the next chunk of the campaign's audience; returns the batches it added.

    It continues from the ledger itself (the highest subscriber id and batch queued so
    far, read by the INSERT itself, so two fillers at once cannot overlap), so an
    interrupted fill picks up where it stopped; the chunk that comes back short marks the
    ledger complete. Each new batch is noted as handed over now: the caller hands it to
    the queue once this commits, and if it never does (it crashed in between), the sweep
    finds the batch lost. Call it with the campaign row locked.
    """
    first_batch = campaign.batches
    chunk = campaign.batch_size * CHUNK_BATCHES
    params = {
        "campaign_id": campaign.id,
        "slug": campaign.slug,
        "batch_size": campaign.batch_size,
        "chunk": chunk,
    }
    added = session.execute(_FILL_CHUNK, params).rowcount
    campaign.recipients, campaign.batches = session.execute(
        text(
            "SELECT COUNT(*), COALESCE(MAX(batch) + 1, 0) FROM deliveries "
            "WHERE campaign_id = :campaign_id"
        ),
        {"campaign_id": campaign.id},
    ).one()
    campaign.filled = added < chunk
    batches = range(first_batch, campaign.batches)
    if batches:
        now = utcnow()
        session.execute(
            insert(Handover),
            [{"campaign_id": campaign.id, "batch": b, "handed_at": now} for b in batches],
        )
    return batches
