"""What mailbox providers judge a campaign's sender by: its hard bounces and complaints.

Counted from the events, each reader once. A hard bounce is a bounce whose type says the
address does not exist (stored with the event since migration 0008): not a soft bounce,
even one that took a reader past the soft-bounce limit, and not a refusal by policy. The
reputation brake (``mailer.sending.brake``) acts on these counts; the stats show them with
its thresholds (``BrakeView``), which it fills in from above this layer.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Literal

from sqlalchemy import ColumnElement, distinct, func, select
from sqlalchemy.orm import Session

from mailer.tracking.events import EventKind, EventRecord

__all__ = ["BrakeView", "complaints", "hard_bounces"]


def _readers(session: Session, campaign_id: int, *where: ColumnElement[bool]) -> int:
    """Readers of the campaign with an event matching ``where``, each counted once."""
    count = func.count(distinct(EventRecord.delivery_id))
    query = select(count).where(EventRecord.campaign_id == campaign_id, *where)
    return session.scalar(query) or 0


def hard_bounces(session: Session, campaign_id: int) -> int:
    """Readers of the campaign whose address bounced hard."""
    return _readers(
        session, campaign_id, EventRecord.kind == EventKind.BOUNCED, EventRecord.bounce == "hard"
    )


def complaints(session: Session, campaign_id: int) -> int:
    """Readers of the campaign who marked it as spam."""
    return _readers(session, campaign_id, EventRecord.kind == EventKind.COMPLAINED)


@dataclass(frozen=True)
class BrakeView:
    """The thresholds the reputation brake holds a campaign to, and what it did."""

    bounce_rate: float  # of attempted messages, once at least bounce_min_attempted
    bounce_min_attempted: int
    complaint_rate: float  # of accepted messages, once at least complaint_min_delivered
    complaint_min_delivered: int
    state: Literal["off", "engaged", "released"]
    since: dt.datetime | None = None  # when it engaged, or was released
    reason: str = ""  # why it engaged

    def shown(self) -> str:
        """The brake's state in a few words (and its reason once it engaged)."""
        if self.state == "released":
            return f"released by resume --force {self.since:%Y-%m-%d %H:%M} UTC"
        if self.state == "engaged":
            return f"engaged {self.since:%Y-%m-%d %H:%M} UTC: {self.reason}"
        return "off"
