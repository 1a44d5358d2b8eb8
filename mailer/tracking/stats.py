"""A campaign's numbers, from the ledger and the events, and a chart of them over time.

The hard-bounce and complaint rates are the reputation brake's measures; given the brake's
view (its thresholds and state, which ``mailer.sending.brake.view`` reads), the figures say
where it would stop the send and whether it did.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from html import escape
from typing import Literal

from sqlalchemy import ColumnElement, and_, distinct, func, select
from sqlalchemy.orm import Session

from mailer.errors import MailerError
from mailer.store.ledger import Campaign, Delivery, DeliveryState
from mailer.tracking.events import EventKind, EventRecord
from mailer.tracking.links import CampaignLink
from mailer.tracking.reputation import BrakeView, complaints, hard_bounces
from subscribers import store

__all__ = ["CampaignStats", "campaign_stats", "chart_svg"]


@dataclass(frozen=True)
class CampaignStats:
    campaign_id: int
    subject: str
    status: str
    sent: int
    failed: int
    unknown: int
    delivered: int
    opens: int  # all opens, privacy proxies and scanners included
    human_opens: int
    unique_opens: int
    unique_human_opens: int
    clicks: int
    unique_clicks: int
    bounces: int
    hard_bounces: int  # readers whose address does not exist
    complaints: int
    unsubscribes: int
    top_links: list[tuple[str, int, int]]  # url, clicks, unique clickers
    timeline: list[tuple[dt.datetime, int, int]]  # hour, opens, clicks
    brake: BrakeView | None = None

    @property
    def click_through(self) -> float:
        """Unique clickers per message that reached an inbox (or was sent, without events)."""
        base = self.delivered or self.sent
        return self.unique_clicks / base if base else 0.0

    def figures(self) -> list[tuple[str, int | str]]:
        """Each figure with a label that says what it counts: the CLI and the page show these."""
        return [
            ("sent", self.sent),
            ("delivered (the provider says it reached the inbox server)", self.delivered),
            ("failed", self.failed),
            ("unknown (no answer yet)", self.unknown),
            ("readers who opened", self.unique_human_opens),
            ("readers who opened, with privacy proxies and scanners", self.unique_opens),
            ("times opened by readers", self.human_opens),
            ("times opened, with privacy proxies and scanners", self.opens),
            ("readers who clicked", self.unique_clicks),
            ("clicks, repeated ones too", self.clicks),
            ("click-through (readers who clicked ÷ delivered)", f"{self.click_through:.1%}"),
            ("bounces", self.bounces),
            ("complaints (marked as spam)", self.complaints),
            ("unsubscribes", self.unsubscribes),
            *self._reputation(),
        ]

    def _reputation(self) -> list[tuple[str, int | str]]:
        """The brake's two rates, as it measures them, with its thresholds when known."""
        attempted = self.sent + self.failed + self.unknown
        bounce = f"{self.hard_bounces / attempted:.1%}" if attempted else "–"
        complaint = f"{self.complaints / self.sent:.2%}" if self.sent else "–"
        bounce_label = "hard-bounce rate (readers whose address does not exist ÷ attempted"
        complaint_label = "complaint rate (readers who marked it as spam ÷ sent"
        if self.brake is None:
            return [(bounce_label + ")", bounce), (complaint_label + ")", complaint)]
        b = self.brake
        return [
            (
                f"{bounce_label}; the brake stops the send over {b.bounce_rate:.1%} "
                f"of at least {b.bounce_min_attempted:,})",
                bounce,
            ),
            (
                f"{complaint_label}; the brake stops the send over {b.complaint_rate:.2%} "
                f"of at least {b.complaint_min_delivered:,})",
                complaint,
            ),
            ("reputation brake", b.shown()),
        ]


def campaign_stats(
    session: Session,
    campaign_id: int,
    top: int = 10,
    timeline: bool = True,
    brake: BrakeView | None = None,
) -> CampaignStats:
    """The numbers of one campaign; ``top`` links, and the hourly timeline if asked for;
    the reputation brake's thresholds and state with its ``brake`` view."""
    campaign = session.get(Campaign, campaign_id)
    if campaign is None:
        raise MailerError(f"no campaign {campaign_id}: see `mailer campaigns list`")
    ledger = {
        status: count
        for status, count in session.execute(
            select(Delivery.status, func.count())
            .where(Delivery.campaign_id == campaign_id)
            .group_by(Delivery.status)
        )
    }
    of_campaign = EventRecord.campaign_id == campaign_id

    def count(kind: EventKind, *where: ColumnElement[bool], unique: bool = False) -> int:
        what = func.count(distinct(EventRecord.delivery_id)) if unique else func.count()
        query = (
            select(what)
            .select_from(EventRecord)
            .where(of_campaign, EventRecord.kind == kind, *where)
        )
        return session.scalar(query) or 0

    human = EventRecord.machine.is_(False)
    clicks_by_link = session.execute(
        select(
            CampaignLink.url,
            func.count(EventRecord.id),
            func.count(distinct(EventRecord.delivery_id)),
        )
        .join(
            EventRecord,
            and_(
                EventRecord.campaign_id == CampaignLink.campaign_id,
                EventRecord.position == CampaignLink.position,
                EventRecord.kind == EventKind.CLICKED,
            ),
        )
        .where(CampaignLink.campaign_id == campaign_id)
        .group_by(CampaignLink.url)
        .order_by(func.count(EventRecord.id).desc(), CampaignLink.url)
        .limit(top)
    ).all()
    unsubscribes = 0
    if campaign.started_at is not None:
        unsubscribes = store.unsubscribed_since(session, campaign_id, campaign.started_at)
    return CampaignStats(
        campaign_id=campaign_id,
        subject=campaign.subject,
        status=campaign.status,
        sent=ledger.get(DeliveryState.SENT, 0),
        failed=ledger.get(DeliveryState.FAILED, 0),
        unknown=ledger.get(DeliveryState.UNKNOWN, 0),
        delivered=count(EventKind.DELIVERED, unique=True),
        opens=count(EventKind.OPENED),
        human_opens=count(EventKind.OPENED, human),
        unique_opens=count(EventKind.OPENED, unique=True),
        unique_human_opens=count(EventKind.OPENED, human, unique=True),
        clicks=count(EventKind.CLICKED),
        unique_clicks=count(EventKind.CLICKED, unique=True),
        bounces=count(EventKind.BOUNCED, unique=True),
        hard_bounces=hard_bounces(session, campaign_id),
        complaints=complaints(session, campaign_id),
        unsubscribes=unsubscribes,
        top_links=[(url, clicks, unique) for url, clicks, unique in clicks_by_link],
        timeline=_timeline(session, campaign_id) if timeline else [],
        brake=brake,
    )


def _timeline(session: Session, campaign_id: int) -> list[tuple[dt.datetime, int, int]]:
    """Opens and clicks per hour (counted in Python: SQLite and PostgreSQL truncate dates
    differently, and a campaign has thousands of events, not billions)."""
    hours: dict[dt.datetime, list[int]] = {}
    rows = session.execute(
        select(EventRecord.at, EventRecord.kind).where(
            EventRecord.campaign_id == campaign_id,
            EventRecord.kind.in_((EventKind.OPENED, EventKind.CLICKED)),
        )
    )
    for at, kind in rows:
        bucket = hours.setdefault(at.replace(minute=0, second=0, microsecond=0), [0, 0])
        bucket[0 if kind == EventKind.OPENED else 1] += 1
    return [(hour, opens, clicks) for hour, (opens, clicks) in sorted(hours.items())]


def chart_svg(
    timeline: list[tuple[dt.datetime, int, int]], width: int = 640, height: int = 240
) -> str:
    """Opens and clicks per hour as an accessible inline SVG (no script, no library)."""
    left, bottom, top, right = 40, 28, 12, 12
    plot_w, plot_h = width - left - right, height - top - bottom
    base = top + plot_h
    peak = max([max(o, c) for _, o, c in timeline] + [1])
    steps = max(len(timeline) - 1, 1)

    def line(column: Literal[1, 2], color: str) -> str:  # opens or clicks
        points = " ".join(
            f"{left + i * plot_w / steps:.1f},{base - row[column] * plot_h / peak:.1f}"
            for i, row in enumerate(timeline)
        )
        return f'<polyline fill="none" stroke="{color}" stroke-width="2" points="{points}"/>'

    def label(x: float, y: float, words: str, anchor: str = "start", color: str = _GREY) -> str:
        return (
            f'<text x="{x}" y="{y}" text-anchor="{anchor}" font-size="11" '
            f'fill="{color}">{escape(words)}</text>'
        )

    total_opens = sum(o for _, o, _ in timeline)
    total_clicks = sum(c for _, _, c in timeline)
    summary = f"Opens and clicks per hour: {total_opens} opens, {total_clicks} clicks"
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="{escape(summary)}" style="max-width:100%;height:auto">',
        f'<line x1="{left}" y1="{base}" x2="{width - right}" y2="{base}" stroke="{_GREY}"/>',
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{base}" stroke="{_GREY}"/>',
        label(left - 6, top + 10, str(peak), "end"),
        label(left - 6, base, "0", "end"),
        label(left + 8, top + 12, "— opens", color=_OPENS),
        label(left + 80, top + 12, "— clicks", color=_CLICKS),
    ]
    if timeline:
        first, last = timeline[0][0], timeline[-1][0]
        parts += [
            label(left, height - 8, f"{first:%m-%d %H:00}"),
            label(width - right, height - 8, f"{last:%m-%d %H:00} UTC", "end"),
            line(1, _OPENS),
            line(2, _CLICKS),
        ]
    return "\n".join([*parts, "</svg>"])


_GREY, _OPENS, _CLICKS = "#6b7280", "#0b63c5", "#d97706"
