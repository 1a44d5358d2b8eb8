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
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
    true,
)
from sqlalchemy.orm import Mapped, Session, mapped_column

from mailer.db import Base, Id, UTCDateTime
from mailer.edition import Edition
from mailer.errors import MailerError
from subscribers.models import utcnow

__all__ = [
    "BATCH_SIZE",
    "Campaign",
    "CampaignState",
    "Delivery",
    "DeliveryState",
    "IllegalTransition",
    "fill_chunk",
    "transition",
]

# Recipients per batch: SendGrid's most personalizations per request.
BATCH_SIZE = 1000


class CampaignState(enum.StrEnum):
    DRAFT = "draft"
    SCHEDULED = "scheduled"
    SENDING = "sending"
    PAUSED = "paused"
    SENT = "sent"
    CANCELLED = "cancelled"
    FAILED = "failed"


class DeliveryState(enum.StrEnum):
    QUEUED = "queued"
    SENDING = "sending"  # claimed by a worker; the request may be in flight
    SENT = "sent"
    FAILED = "failed"
    UNKNOWN = "unknown"  # the worker died between the request and its answer
    SKIPPED = "skipped"  # left the list after the ledger was filled


_LEGAL = {
    CampaignState.DRAFT: {CampaignState.SCHEDULED, CampaignState.SENDING, CampaignState.CANCELLED},
    CampaignState.SCHEDULED: {CampaignState.SENDING, CampaignState.CANCELLED, CampaignState.DRAFT},
    CampaignState.SENDING: {
        CampaignState.PAUSED,
        CampaignState.SENT,
        CampaignState.CANCELLED,
        CampaignState.FAILED,
    },
    CampaignState.PAUSED: {CampaignState.SENDING, CampaignState.CANCELLED},
    CampaignState.SENT: set(),
    CampaignState.CANCELLED: set(),
    CampaignState.FAILED: {CampaignState.SENDING, CampaignState.CANCELLED},
}


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


def transition(campaign: Campaign, to: CampaignState) -> None:
    """Move a campaign to ``to`` if that is a legal step from where it is."""
    current = CampaignState(campaign.status)
    if to not in _LEGAL[current]:
        raise IllegalTransition(f"campaign {campaign.id} is {current}: it cannot become {to}")
    campaign.status = to
    now = utcnow()
    if to == CampaignState.SENDING and campaign.started_at is None:
        campaign.started_at = now
    if to in (CampaignState.SENT, CampaignState.CANCELLED, CampaignState.FAILED):
        campaign.finished_at = now


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
    ledger complete. Call it with the campaign row locked.
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
    return range(first_batch, campaign.batches)
