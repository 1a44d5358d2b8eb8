"""Tables of the subscriber store.

An address is identified by ``email_hash`` (SHA-256 of its lower-cased form), in the
subscribers table and in the suppression list alike: unique without regard to case,
and still recognisable after the address itself has been erased.
"""

from __future__ import annotations

import datetime as dt
import enum
from typing import Any

from sqlalchemy import JSON, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from mailer.clock import utcnow
from mailer.store.db import Base, Id, UTCDateTime

__all__ = ["Activity", "Status", "Subscriber", "Suppression", "SuppressionReason"]


class Status(enum.StrEnum):
    PENDING = "pending"
    CONFIRMED = "confirmed"
    UNSUBSCRIBED = "unsubscribed"
    BOUNCED = "bounced"
    COMPLAINED = "complained"


class SuppressionReason(enum.StrEnum):
    UNSUBSCRIBED = "unsubscribed"
    BOUNCED = "bounced"
    COMPLAINED = "complained"
    ERASED = "erased"
    MANUAL = "manual"


class Subscriber(Base):
    __tablename__ = "subscribers"
    # Never reuse an id (SQLite would): old unsubscribe links name subscribers by id.
    __table_args__ = ({"sqlite_autoincrement": True},)

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    email: Mapped[str] = mapped_column(String(320))
    email_hash: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    status: Mapped[str] = mapped_column(String(16), index=True)
    tags: Mapped[list[str]] = mapped_column(JSON, default=list)
    source: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    confirmed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    unsubscribed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    # Temporary (4xx) bounces so far; enough of them suppress the address.
    soft_bounces: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # When the last confirmation email went out: resending is rate limited.
    confirmation_sent_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    # The consent record: when, from where, through what, agreeing to which words.
    consent_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    consent_ip: Mapped[str] = mapped_column(String(45), default="")
    consent_user_agent: Mapped[str] = mapped_column(String(400), default="")
    consent_source: Mapped[str] = mapped_column(String(200), default="")
    consent_text: Mapped[str] = mapped_column(Text, default="")

    def to_dict(self) -> dict[str, Any]:
        return {
            column.key: _jsonable(getattr(self, column.key))
            for column in self.__table__.columns
            if column.key != "email_hash"
        }


class Suppression(Base):
    """An address that must never be mailed again, whatever the subscribers table says."""

    __tablename__ = "suppressions"

    email_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    reason: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    detail: Mapped[str] = mapped_column(Text, default="")


class Activity(Base):
    """What happened to a subscriber and when: the history a GDPR export hands over."""

    __tablename__ = "activity"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    subscriber_id: Mapped[int | None] = mapped_column(
        Id, ForeignKey("subscribers.id", ondelete="CASCADE"), index=True
    )
    kind: Mapped[str] = mapped_column(String(40))
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


def _jsonable(value: Any) -> Any:
    return value.isoformat() if isinstance(value, dt.datetime) else value
