"""The campaign manager: create, start, pause, resume, cancel, and keep sends moving.

Batches are handed to a ``Queue``: Celery on Redis when a broker is configured,
or the same batch code run inline in this process when none is (the embedded
default). Either way the ledger decides who still needs the edition, so handing
a batch over twice, or after a crash, cannot send anything twice.
"""

from __future__ import annotations

import datetime as dt
import logging
import random
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from sqlalchemy import Row, delete, exists, func, select, true, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from mailer.clock import utcnow
from mailer.edition import Edition
from mailer.errors import ConfigError, MailerError
from mailer.sending import telemetry
from mailer.sending.batch import BatchResult, pause_with_error, send_batch
from mailer.store.ledger import (
    Campaign,
    CampaignState,
    Delivery,
    DeliveryState,
    Handover,
    IllegalTransition,
    finish_if_done,
    handed_over,
    move,
    record_fill,
)
from mailer.tracking.events import settle_unknown
from mailer.tracking.links import CampaignLink, link_table
from subscribers import audience

if TYPE_CHECKING:  # built above this layer; here only in signatures
    from mailer.runtime import Runtime

__all__ = [
    "CeleryQueue",
    "InlineQueue",
    "Progress",
    "Queue",
    "Reconciled",
    "Settled",
    "backoff",
    "campaign_of",
    "cancel",
    "check_broker",
    "create_campaign",
    "fill_chunk",
    "hand_over",
    "make_queue",
    "pause",
    "progress",
    "reconcile",
    "resume",
    "settle",
    "start",
    "start_due",
    "sweep",
]

SEND_BATCH_TASK = "mailer.send_batch"
# Batches go to Celery's default queue, beat's tasks to their own (worker.py routes them;
# /metrics reads their depth).
BATCH_QUEUE, BEAT_QUEUE = "celery", "beat"
QUEUES = (BATCH_QUEUE, BEAT_QUEUE)
# Batches queued per chunk of the fill: sending starts after the first chunk, not the last.
# The first chunks are small, so the workers start at once, then each as large as the
# ledger so far, up to CHUNK_BATCHES.
FIRST_CHUNK_BATCHES, CHUNK_BATCHES = 4, 100

log = logging.getLogger(__name__)


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


def check_broker(broker_url: str, timeout: float = 3.0) -> None:
    """``ConfigError`` in one line unless the broker answers within ``timeout`` seconds:
    checked before a campaign is started or resumed, so none is left half handed out."""
    from kombu import Connection
    from kombu.exceptions import OperationalError as BrokerError
    from kombu.utils.url import maybe_sanitize_url

    try:
        with Connection(broker_url, connect_timeout=timeout) as broker:
            broker.ensure_connection(max_retries=0)
    except BrokerError as exc:
        raise ConfigError(
            f"cannot reach the broker MAILER_BROKER_URL={maybe_sanitize_url(broker_url)} "
            f"({str(exc).rstrip('.')}): nothing was started"
        ) from exc


class InlineQueue:
    """Runs the batches in this process: each once, then those with readers back in the
    queue again after a pause (backoff), so a reader told "later" holds up only its own
    batch's tries, never the batches after it."""

    def __init__(self, rt: Runtime, on_batch: Callable[[BatchResult], None] | None = None) -> None:
        self.rt = rt
        self.on_batch = on_batch
        self.sleep = time.sleep

    def enqueue(self, campaign_id: int, batches: Iterable[int]) -> None:
        s = self.rt.settings
        waiting = list(batches)
        for attempt in range(s.max_retries + 1):
            results = {batch: self._send(campaign_id, batch) for batch in waiting}
            waiting = [batch for batch, result in results.items() if result.requeued]
            if not waiting:
                return
            if attempt < s.max_retries:
                asked = max(results[batch].retry_after or 0.0 for batch in waiting)
                delay = backoff(attempt, asked, s.retry_base_seconds, s.retry_max_seconds)
                for batch in waiting:
                    telemetry.retrying(campaign_id, batch, attempt + 1, delay, results[batch].error)
                self.sleep(delay)
        for batch in waiting:
            give_up(self.rt, campaign_id, batch, results[batch].error)

    def _send(self, campaign_id: int, batch: int) -> BatchResult:
        result = send_batch(self.rt, campaign_id, batch)
        if self.on_batch is not None:
            self.on_batch(result)
        return result


def give_up(rt: Runtime, campaign_id: int, batch: int, error: str) -> None:
    """Out of retries: pause the campaign (its rows stay queued) for the operator to resume."""
    telemetry.gave_up(campaign_id, batch, error)
    pause_with_error(rt, campaign_id, f"batch {batch} gave up after retries: {error}")


def make_queue(rt: Runtime, on_batch: Callable[[BatchResult], None] | None = None) -> Queue:
    if rt.settings.broker_url:
        return CeleryQueue(rt.settings.broker_url)
    return InlineQueue(rt, on_batch)


def create_campaign(
    rt: Runtime,
    edition: Edition,
    post_path: Path | None = None,
    tracking: bool | None = None,
    *,
    again: bool = False,
) -> tuple[Campaign, bool]:
    """Freeze ``edition`` in a new draft campaign, or find the campaign of its post.

    Returns the campaign and whether it is new. The unique index on live campaigns'
    slugs makes this safe against two callers at once (two beats, say). A post whose
    last campaign was cancelled gets that campaign back, so nothing (a redelivered beat
    task, a late second beat) starts the post again by itself; only ``again`` makes a new
    campaign, which goes to the readers the cancelled one did not reach. The campaign's
    link table is written with it: clicks can only ever lead to those links.
    """
    if not again:
        last = campaign_of(rt, edition.slug)
        if last is not None and last.status == CampaignState.CANCELLED:
            return last, False
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


def campaign_of(rt: Runtime, slug: str) -> Campaign | None:
    """The post's last campaign: its live one, or else the cancelled one that
    ``create_campaign`` gives back unless asked to start the post ``again``."""
    with rt.sessions() as session:
        return session.scalar(
            select(Campaign).where(Campaign.slug == slug).order_by(Campaign.id.desc()).limit(1)
        )


def start(rt: Runtime, campaign_id: int, queue: Queue, at: dt.datetime | None = None) -> bool:
    """Start a draft or scheduled campaign now (or schedule it for ``at``); False if it was
    started already. The ledger is then filled a chunk at a time, each chunk's batches
    enqueued once it commits, so sending starts while the rest is still being queued."""
    startable = (CampaignState.DRAFT, CampaignState.SCHEDULED)
    scheduled = at is not None and at > utcnow()
    with rt.sessions.begin() as session:
        _locked(session, campaign_id)  # a clear error for an unknown id
        # The move decides who starts it: of two callers at once (two beats), one moves
        # the campaign and the other finds it moved.
        to, values = CampaignState.SENDING, {}
        if scheduled:
            to, values = CampaignState.SCHEDULED, {"scheduled_at": at}
        if not move(session, campaign_id, to, only_from=startable, strict=False, **values):
            return False
    if not scheduled:
        fill(rt, campaign_id, queue)
    return True


def fill(rt: Runtime, campaign_id: int, queue: Queue) -> None:
    """Queue the rest of a sending campaign's audience, a chunk per transaction.

    Safe to call again, or from two places at once: each chunk continues from the campaign's
    counts under its row lock (on SQLite, which takes no row lock, the second of two
    fillers at once fails on the handovers' key and writes nothing). A paused or cancelled
    campaign stops filling; resume and the sweep call this again.
    """
    while True:
        with rt.sessions.begin() as session:
            # FOR NO KEY UPDATE: two fillers take turns, and so do a filler and
            # finish_if_done, while the claims of batches queued already (FOR KEY SHARE)
            # go on meanwhile.
            campaign = _locked(session, campaign_id, claims_wait=False)
            if campaign.filled or campaign.status != CampaignState.SENDING:
                return
            batches = fill_chunk(session, campaign)
            if campaign.filled:
                finish_if_done(session, campaign_id)
        queue.enqueue(campaign_id, batches)


def fill_chunk(session: Session, campaign: Campaign) -> range:
    """Queue the next chunk of the campaign's audience (``subscribers.audience``) and note
    it in the ledger; returns the batches it added. Call it with the campaign row locked."""
    batches = min(CHUNK_BATCHES, max(FIRST_CHUNK_BATCHES, campaign.batches))
    size = campaign.batch_size * batches
    return record_fill(session, campaign, audience.add_chunk(session, campaign, size), size)


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
        move(session, campaign_id, CampaignState.PAUSED)


def resume(rt: Runtime, campaign_id: int, queue: Queue) -> int:
    """Resume a paused campaign: only rows still queued are sent. Returns how many rows
    were in flight when it resumed, claimed before it stopped: their sender finishes
    them, or, if it stopped too, the sweep makes them unknown after
    MAILER_STALE_CLAIM_SECONDS."""
    with rt.sessions.begin() as session:
        resumed = CampaignState.PAUSED
        if not move(
            session, campaign_id, CampaignState.SENDING, only_from=[resumed], strict=False, errors=0
        ):
            status = _locked(session, campaign_id).status
            raise IllegalTransition(
                f"campaign {campaign_id} is {status}: only a paused campaign resumes "
                "(`mailer send` starts a new one)"
            )
        in_flight = session.scalar(
            select(func.count())
            .select_from(Delivery)
            .where(Delivery.campaign_id == campaign_id, Delivery.status == DeliveryState.SENDING)
        )
        batches = _open_batches(session, campaign_id)
        finish_if_done(session, campaign_id)
    hand_over(rt, queue, campaign_id, batches)
    fill(rt, campaign_id, queue)
    return in_flight or 0


def cancel(rt: Runtime, campaign_id: int) -> None:
    with rt.sessions.begin() as session:
        move(session, campaign_id, CampaignState.CANCELLED)


def hand_over(rt: Runtime, queue: Queue, campaign_id: int, batches: Iterable[int]) -> None:
    """Hand ``batches`` to the queue again, noting when (the sweep reads it: ``Handover``)."""
    batches = list(batches)
    if batches:
        with rt.sessions.begin() as session:
            handed_over(session, campaign_id, batches, utcnow())
        queue.enqueue(campaign_id, batches)


def sweep(
    rt: Runtime, queue: Queue, *, lost_after: dt.timedelta, unknown_window: dt.timedelta
) -> None:
    """Keep sends moving and the ledger true without a person: settle the rows whose outcome
    is unknown (``settle``, by MAILER_UNKNOWN_POLICY), finish the fills and the campaigns
    a stopped process left, and hand out again each queued batch last handed over more
    than ``lost_after`` ago (its broker message was lost). A batch handed out twice costs
    nothing: the second task finds nothing left to claim."""
    done = settle(rt, resend=rt.settings.unknown_policy == "resend", unknown_window=unknown_window)
    if done.stranded or done.settled or done.requeued:  # stranded: a sender stopped mid-batch
        log.log(
            logging.WARNING if done.stranded else logging.INFO,
            "sweep settled rows",
            extra={"stranded": done.stranded, "settled": done.settled, "requeued": done.requeued},
        )
    for campaign_id, batches in done.batches.items():
        hand_over(rt, queue, campaign_id, batches)
    cutoff = utcnow() - lost_after
    with rt.sessions() as session:
        sending = session.execute(
            select(Campaign.id, Campaign.filled).where(Campaign.status == CampaignState.SENDING)
        ).all()
        lost = {
            campaign_id: _lost_batches(session, campaign_id, cutoff) for campaign_id, _ in sending
        }
    for campaign_id, filled in sending:
        if lost[campaign_id]:
            log.warning(
                "sweep handed lost batches out again",
                extra={
                    "campaign": campaign_id,
                    "batches": len(lost[campaign_id]),
                    "queued_seconds": lost_after.total_seconds(),
                },
            )
        hand_over(rt, queue, campaign_id, lost[campaign_id])
        if not filled:
            fill(rt, campaign_id, queue)
        with rt.sessions.begin() as session:
            finish_if_done(session, campaign_id)


@dataclass(frozen=True)
class Settled:
    """What one pass over the rows whose outcome is unknown did (``settle``)."""

    stranded: int  # rows a stopped sender left in flight: now unknown
    settled: int  # unknown rows the provider's stored events show as accepted: now sent
    requeued: int  # unknown rows with no such event for the window: queued again
    batches: dict[int, list[int]]  # the batches of the requeued rows, by campaign


def settle(
    rt: Runtime,
    *,
    resend: bool,
    unknown_window: dt.timedelta,
    campaign_id: int | None = None,
) -> Settled:
    """The one order for rows whose outcome is unknown, the sweep's and ``reconcile``'s:
    rows in flight longer than MAILER_STALE_CLAIM_SECONDS (their sender stopped) become
    unknown; unknown rows the provider's stored events show as accepted become sent;
    then, and only with ``resend``, unknown rows whose request is ``unknown_window`` old
    without such an event are taken as not sent and queued again. Settling comes first,
    always, so that a reader SendGrid confirmed is never sent the edition twice.

    Of one campaign, or of all; a cancelled campaign's rows are never queued again.
    """
    now = utcnow()
    scope = Delivery.campaign_id == campaign_id if campaign_id is not None else true()
    stale = now - dt.timedelta(seconds=rt.settings.stale_claim_seconds)
    with rt.sessions.begin() as session:
        stranded = list(
            session.scalars(
                update(Delivery)
                .where(scope, Delivery.status == DeliveryState.SENDING, Delivery.claimed_at < stale)
                .values(status=DeliveryState.UNKNOWN, error="the worker stopped during the send")
                .returning(Delivery.campaign_id)
                .execution_options(synchronize_session=False)
            )
        )
        settled = settle_unknown(session, campaign_id)
        requeued: Sequence[Row[int, int]] = []  # (campaign, batch) of each row queued again
        if resend:
            live = select(Campaign.id).where(Campaign.status != CampaignState.CANCELLED)
            requeued = session.execute(
                update(Delivery)
                .where(
                    scope,
                    Delivery.status == DeliveryState.UNKNOWN,
                    Delivery.claimed_at < now - unknown_window,
                    Delivery.campaign_id.in_(live),
                )
                .values(status=DeliveryState.QUEUED, claimed_at=None, error="")
                .returning(Delivery.campaign_id, Delivery.batch)
                .execution_options(synchronize_session=False)
            ).all()
        batches: dict[int, set[int]] = {}
        for requeued_campaign, batch in requeued:
            batches.setdefault(requeued_campaign, set()).add(batch)
        for touched in sorted(set(stranded) | set(batches)):  # in id order: no deadlock
            _locked(session, touched)
            if touched in batches:  # to send the rows queued again
                unsettled = [CampaignState.UNSETTLED]
                move(session, touched, CampaignState.SENDING, only_from=unsettled, strict=False)
            finish_if_done(session, touched)
    return Settled(
        len(stranded), settled, len(requeued), {c: sorted(b) for c, b in batches.items()}
    )


@dataclass(frozen=True)
class Reconciled:
    settled: int  # unknown rows the provider's events show as accepted: now sent
    requeued: int  # unknown rows queued again (resend, past the window)
    still_unknown: int
    # When the last row still unknown will have waited the window: a resend sends it from
    # then on (None: no row is unknown).
    resendable_at: dt.datetime | None


def reconcile(
    rt: Runtime,
    campaign_id: int,
    queue: Queue,
    resend: bool | None = None,
    *,
    unknown_window: dt.timedelta,
) -> Reconciled:
    """Settle a campaign's rows whose outcome is unknown, in the sweep's order (``settle``):
    from the provider's stored events first; then, by ``resend`` (default:
    ``MAILER_UNKNOWN_POLICY``), queue again those without an event for ``unknown_window``,
    or leave them unknown for the operator to judge."""
    resend = rt.settings.unknown_policy == "resend" if resend is None else resend
    done = settle(rt, resend=resend, unknown_window=unknown_window, campaign_id=campaign_id)
    hand_over(rt, queue, campaign_id, done.batches.get(campaign_id, []))
    with rt.sessions() as session:
        last_request = session.scalar(
            select(func.max(Delivery.claimed_at)).where(
                Delivery.campaign_id == campaign_id, Delivery.status == DeliveryState.UNKNOWN
            )
        )
    return Reconciled(
        done.settled,
        done.requeued,
        progress(rt, campaign_id).unknown,
        last_request + unknown_window if last_request else None,
    )


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


def _locked(session: Session, campaign_id: int, *, claims_wait: bool = True) -> Campaign:
    """The campaign, its row locked: FOR UPDATE, or with ``claims_wait`` False FOR NO KEY
    UPDATE, which the batches' claims (FOR KEY SHARE) do not wait for."""
    lock = True if claims_wait else {"key_share": True}
    campaign = session.get(Campaign, campaign_id, with_for_update=lock)
    if campaign is None:
        raise MailerError(f"no campaign {campaign_id}: see `mailer campaigns list`")
    return campaign


def _lost_batches(session: Session, campaign_id: int, cutoff: dt.datetime) -> list[int]:
    """The campaign's batches with rows still queued, last handed over before ``cutoff``."""
    queued = exists().where(
        Delivery.campaign_id == Handover.campaign_id,
        Delivery.batch == Handover.batch,
        Delivery.status == DeliveryState.QUEUED,
    )
    return list(
        session.scalars(
            select(Handover.batch)
            .where(Handover.campaign_id == campaign_id, Handover.handed_at < cutoff, queued)
            .order_by(Handover.batch)
        )
    )


def _open_batches(session: Session, campaign_id: int) -> list[int]:
    return list(
        session.scalars(
            select(Delivery.batch)
            .where(Delivery.campaign_id == campaign_id, Delivery.status == DeliveryState.QUEUED)
            .distinct()
            .order_by(Delivery.batch)
        )
    )
