"""The campaign manager: create, start, pause, resume, cancel, and keep sends moving.

Batches are handed to a ``Queue``: Celery on Redis when a broker is configured,
or the same batch code run inline in this process when none is (the embedded
default). Either way the ledger decides who still needs the edition, so handing
a batch over twice, or after a crash, cannot send anything twice.
"""

from __future__ import annotations

import datetime as dt
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError

from mailer.batch import BatchResult, finish_if_done, pause_with_error, reap, send_batch
from mailer.campaign import (
    Campaign,
    CampaignState,
    Delivery,
    DeliveryState,
    IllegalTransition,
    fill_chunk,
    transition,
)
from mailer.edition import Edition
from mailer.errors import MailerError
from mailer.events import settle_unknown
from mailer.runtime import Runtime
from mailer.tracking import CampaignLink, link_table
from subscribers.models import utcnow

__all__ = [
    "CeleryQueue",
    "InlineQueue",
    "Progress",
    "Queue",
    "backoff",
    "cancel",
    "create_campaign",
    "make_queue",
    "pause",
    "progress",
    "reconcile",
    "resume",
    "start",
    "start_due",
    "sweep",
]

SEND_BATCH_TASK = "mailer.send_batch"


def backoff(attempt: int, retry_after: float | None, base: float, cap: float) -> float:
    """Exponential backoff with jitter, never sooner than the provider asked."""
    delay = min(cap, base * 2**attempt) * random.uniform(0.5, 1.5)
    return max(delay, retry_after or 0.0)


class Queue(Protocol):
    def enqueue(self, campaign_id: int, batches: Iterable[int]) -> None: ...


class CeleryQueue:
    """Hands batches to Celery workers by task name (ids only: no addresses in the broker)."""

    def __init__(self, broker_url: str) -> None:
        from celery import Celery

        self.app = Celery("mailer-producer", broker=broker_url)

    def enqueue(self, campaign_id: int, batches: Iterable[int]) -> None:
        with self.app.producer_or_acquire() as producer:
            for batch in batches:
                self.app.send_task(SEND_BATCH_TASK, args=[campaign_id, batch], producer=producer)

    def close(self) -> None:
        """Release the broker connections (a long-lived process keeps its queue open)."""
        self.app.close()


class InlineQueue:
    """Runs each batch at once in this process, retrying transient errors with backoff."""

    def __init__(self, rt: Runtime, on_batch: Callable[[BatchResult], None] | None = None) -> None:
        self.rt = rt
        self.on_batch = on_batch
        self.sleep = time.sleep

    def enqueue(self, campaign_id: int, batches: Iterable[int]) -> None:
        for batch in batches:
            run_batch_with_retries(self.rt, campaign_id, batch, self.sleep, self.on_batch)


def run_batch_with_retries(
    rt: Runtime,
    campaign_id: int,
    batch: int,
    sleep: Callable[[float], None],
    on_batch: Callable[[BatchResult], None] | None = None,
) -> None:
    for attempt in range(rt.settings.max_retries + 1):
        result = send_batch(rt, campaign_id, batch)
        if on_batch is not None:
            on_batch(result)
        if not result.requeued:
            return
        if attempt < rt.settings.max_retries:
            s = rt.settings
            sleep(backoff(attempt, result.retry_after, s.retry_base_seconds, s.retry_max_seconds))
    give_up(rt, campaign_id, batch, result.error)


def give_up(rt: Runtime, campaign_id: int, batch: int, error: str) -> None:
    """Out of retries: pause the campaign (its rows stay queued) for the operator to resume."""
    pause_with_error(rt, campaign_id, f"batch {batch} gave up after retries: {error}")


def make_queue(rt: Runtime, on_batch: Callable[[BatchResult], None] | None = None) -> Queue:
    if rt.settings.broker_url:
        return CeleryQueue(rt.settings.broker_url)
    return InlineQueue(rt, on_batch)


def create_campaign(
    rt: Runtime, edition: Edition, post_path: Path | None = None, tracking: bool | None = None
) -> tuple[Campaign, bool]:
    """Freeze ``edition`` in a new draft campaign, or find the live campaign of its post.

    Returns the campaign and whether it is new. The unique index on live campaigns'
    slugs makes this safe against two callers at once (two beats, say). The campaign's
    link table is written with it: clicks can only ever lead to those links.
    """
    campaign = Campaign(
        slug=edition.slug,
        post_path=str(post_path or ""),
        subject=edition.subject,
        edition=edition.to_dict(),
        status=CampaignState.DRAFT,
        backend=rt.settings.backend,
        batch_size=rt.settings.batch_size,
        tracking=rt.settings.tracking if tracking is None else tracking,
    )
    try:
        with rt.sessions.begin() as session:
            session.add(campaign)
            session.flush()
            session.add_all(
                CampaignLink(campaign_id=campaign.id, position=position, url=url)
                for position, url in enumerate(link_table(edition))
            )
        return campaign, True
    except IntegrityError:
        pass
    with rt.sessions() as session:
        existing = session.scalar(
            select(Campaign).where(
                Campaign.slug == edition.slug, Campaign.status != CampaignState.CANCELLED
            )
        )
    if existing is None:
        raise MailerError(f"cannot create a campaign for {edition.slug}")
    if existing.status == CampaignState.DRAFT:  # never started: take the post as it is now
        with rt.sessions.begin() as session:
            existing = _locked(session, existing.id)
            if existing.status == CampaignState.DRAFT:
                existing.edition = edition.to_dict()
                existing.subject = edition.subject
                existing.tracking = campaign.tracking
                session.execute(delete(CampaignLink).where(CampaignLink.campaign_id == existing.id))
                session.add_all(
                    CampaignLink(campaign_id=existing.id, position=position, url=url)
                    for position, url in enumerate(link_table(edition))
                )
    return existing, False


def start(rt: Runtime, campaign_id: int, queue: Queue, at: dt.datetime | None = None) -> bool:
    """Start a draft or scheduled campaign now (or schedule it for ``at``); False if it was
    started already. The ledger is then filled a chunk at a time, each chunk's batches
    enqueued once it commits, so sending starts while the rest is still being queued."""
    startable = (Campaign.id == campaign_id) & Campaign.status.in_(
        (CampaignState.DRAFT, CampaignState.SCHEDULED)
    )
    with rt.sessions.begin() as session:
        _locked(session, campaign_id)  # a clear error for an unknown id
        # One conditional UPDATE decides who starts it: of two callers at once (two
        # beats), one changes the row and the other changes nothing, on SQLite too.
        if at is not None and at > utcnow():
            values = {"status": CampaignState.SCHEDULED, "scheduled_at": at}
        else:
            values = {"status": CampaignState.SENDING, "started_at": utcnow()}
        if not session.execute(update(Campaign).where(startable).values(**values)).rowcount:
            return False
        scheduled = values["status"] == CampaignState.SCHEDULED
    if not scheduled:
        fill(rt, campaign_id, queue)
    return True


def fill(rt: Runtime, campaign_id: int, queue: Queue) -> None:
    """Queue the rest of a sending campaign's audience, a chunk per transaction.

    Safe to call again, or from two places at once: each chunk continues from the ledger
    under the campaign's row lock. A paused or cancelled campaign stops filling; resume
    and the sweep call this again.
    """
    while True:
        with rt.sessions.begin() as session:
            campaign = _locked(session, campaign_id)
            if campaign.filled or campaign.status != CampaignState.SENDING:
                return
            batches = fill_chunk(session, campaign)
            if campaign.filled:
                finish_if_done(session, campaign_id)
        queue.enqueue(campaign_id, batches)


def start_due(rt: Runtime, queue: Queue) -> list[int]:
    """Start the scheduled campaigns whose time has come."""
    with rt.sessions() as session:
        due = list(
            session.scalars(
                select(Campaign.id).where(
                    Campaign.status == CampaignState.SCHEDULED, Campaign.scheduled_at <= utcnow()
                )
            )
        )
    return [campaign_id for campaign_id in due if start(rt, campaign_id, queue)]


def pause(rt: Runtime, campaign_id: int) -> None:
    with rt.sessions.begin() as session:
        transition(_locked(session, campaign_id), CampaignState.PAUSED)


def resume(rt: Runtime, campaign_id: int, queue: Queue) -> int:
    """Resume a paused (or failed) campaign: only rows still queued are sent. Returns how many
    are still queued afterwards (none, when the queue sends inline)."""
    with rt.sessions.begin() as session:
        campaign = _locked(session, campaign_id)
        if campaign.status not in (CampaignState.PAUSED, CampaignState.FAILED):
            raise IllegalTransition(
                f"campaign {campaign_id} is {campaign.status}: only a paused or failed "
                "campaign resumes (`mailer send` starts a new one)"
            )
        transition(campaign, CampaignState.SENDING)
        campaign.errors = 0
        batches = _open_batches(session, campaign_id)
        finish_if_done(session, campaign_id)
    queue.enqueue(campaign_id, batches)
    fill(rt, campaign_id, queue)
    return progress(rt, campaign_id).queued


def cancel(rt: Runtime, campaign_id: int) -> None:
    with rt.sessions.begin() as session:
        transition(_locked(session, campaign_id), CampaignState.CANCELLED)


def sweep(rt: Runtime, queue: Queue, quiet_seconds: float) -> None:
    """Keep sends moving whatever the broker lost: settle dead workers' rows, and hand
    over again the batches of sending campaigns that made no progress lately."""
    for campaign_id, batches in reap(rt).items():
        queue.enqueue(campaign_id, batches)
    cutoff = utcnow() - dt.timedelta(seconds=quiet_seconds)
    with rt.sessions() as session:
        sending = session.execute(
            select(Campaign.id, Campaign.started_at).where(Campaign.status == CampaignState.SENDING)
        ).all()
        stalled = {}
        for campaign_id, started_at in sending:
            last_claim = session.scalar(
                select(func.max(Delivery.claimed_at)).where(Delivery.campaign_id == campaign_id)
            )
            if (last_claim or started_at or cutoff) <= cutoff:
                stalled[campaign_id] = _open_batches(session, campaign_id)
    for campaign_id, batches in stalled.items():
        queue.enqueue(campaign_id, batches)
        fill(rt, campaign_id, queue)  # a fill its process did not finish
        with rt.sessions.begin() as session:
            finish_if_done(session, campaign_id)


@dataclass(frozen=True)
class Reconciled:
    settled: int  # unknown rows the provider's events show as accepted: now sent
    requeued: int  # unknown rows queued again (policy "resend")
    still_unknown: int


def reconcile(
    rt: Runtime, campaign_id: int, queue: Queue, resend: bool | None = None
) -> Reconciled:
    """Settle a campaign's ``unknown`` deliveries: from the provider's events first, then by
    policy (``MAILER_UNKNOWN_POLICY``, or ``resend`` given here): queue them again, or leave
    them unknown for the operator to judge."""
    resend = rt.settings.unknown_policy == "resend" if resend is None else resend
    unknown = (Delivery.campaign_id == campaign_id) & (Delivery.status == DeliveryState.UNKNOWN)
    batches: list[int] = []
    requeued = 0
    with rt.sessions.begin() as session:
        campaign = _locked(session, campaign_id)
        settled = settle_unknown(session, campaign_id)
        if resend:
            batches = list(session.scalars(select(Delivery.batch).where(unknown).distinct()))
            requeued = (
                session.execute(
                    update(Delivery)
                    .where(unknown)
                    .values(status=DeliveryState.QUEUED, claimed_at=None, error="")
                ).rowcount
                or 0
            )
            if requeued and campaign.status == CampaignState.SENT:
                # Reopened to send the requeued rows; it is marked sent again when done.
                campaign.status = CampaignState.SENDING
                campaign.finished_at = None
    if batches:
        queue.enqueue(campaign_id, batches)
    return Reconciled(settled, requeued, progress(rt, campaign_id).unknown)


@dataclass(frozen=True)
class Progress:
    status: str
    recipients: int
    queued: int
    sending: int
    sent: int
    failed: int
    unknown: int
    skipped: int
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    last_error: str

    @property
    def done(self) -> int:
        return self.sent + self.failed + self.unknown + self.skipped


def progress(rt: Runtime, campaign_id: int) -> Progress:
    with rt.sessions() as session:
        campaign = session.get(Campaign, campaign_id)
        if campaign is None:
            raise MailerError(f"no campaign {campaign_id}: see `mailer campaigns list`")
        rows = session.execute(
            select(Delivery.status, func.count())
            .where(Delivery.campaign_id == campaign_id)
            .group_by(Delivery.status)
        )
        counts = {status: count for status, count in rows}
    return Progress(
        status=campaign.status,
        recipients=campaign.recipients,
        started_at=campaign.started_at,
        finished_at=campaign.finished_at,
        last_error=campaign.last_error,
        **{state.value: counts.get(state.value, 0) for state in DeliveryState},
    )


def _locked(session, campaign_id: int) -> Campaign:
    campaign = session.get(Campaign, campaign_id, with_for_update=True)
    if campaign is None:
        raise MailerError(f"no campaign {campaign_id}: see `mailer campaigns list`")
    return campaign


def _open_batches(session, campaign_id: int) -> list[int]:
    return list(
        session.scalars(
            select(Delivery.batch)
            .where(Delivery.campaign_id == campaign_id, Delivery.status == DeliveryState.QUEUED)
            .distinct()
            .order_by(Delivery.batch)
        )
    )
