"""One batch of one campaign: claim its rows, send one provider request, record each outcome.

The order is what keeps the ledger true whatever fails: the claim (queued →
sending) commits before the request goes out, and the outcomes commit after it
answers. A worker that dies in between leaves rows in ``sending``; the sweep later
turns them into ``unknown``, which is never resent unless the operator's policy
says so. A task delivered twice finds nothing left to claim.

Per batch, only what is needed crosses to the database and back: the campaign's
few fields (its frozen edition once per process), the claim, the outcomes (whose
commit does not wait for the disk, unless MAILER_UNKNOWN_POLICY=resend: lost in a
server crash, the rows stay in ``sending`` and become ``unknown``, never sent again), and,
once they are committed, "is anything left?" asked first of the batches after
this one, where the answer is nearly always yes. (Asked before the commit, two last
batches recording at once would each see the other's rows open, and neither would end
the campaign.)

A reader the server refuses for now goes back to the queue alone, with the reason
on its row, and is tried again with its batch; one refused at every try of its batch
fails (a soft bounce), so one reader never makes a batch give up and pause the
campaign. A reader whose address does not exist is a hard bounce, recorded and
applied as a provider's bounce event is, so one rule takes addresses off the list.
"""

from __future__ import annotations

import datetime as dt
import gc
import time
from collections import Counter
from dataclasses import dataclass, replace
from html import escape
from typing import TYPE_CHECKING, Literal

from sqlalchemy import ColumnElement, bindparam, func, literal_column, select, text, update
from sqlalchemy.orm import Session

from mailer.clock import utcnow
from mailer.delivery import Outcome
from mailer.delivery.message import (
    Batch,
    Envelope,
    Sender,
    delivery_key,
    without_unsafe_readers,
)
from mailer.edition import VIEW_PLACEHOLDER, Edition
from mailer.errors import (
    ConfigError,
    PermanentDeliveryError,
    TransientDeliveryError,
    UncertainDeliveryError,
)
from mailer.sending import brake, telemetry
from mailer.store.dialect import among, among_locked, commit_without_flush
from mailer.store.ledger import (
    Campaign,
    CampaignState,
    Delivery,
    DeliveryState,
    finish_if_done,
    move,
)
from mailer.tokens import Purpose
from mailer.tracking.events import Event, EventKind, apply, record, settle_unknown
from mailer.tracking.links import CampaignLink, track, tracking_substitutions
from subscribers import audience

if TYPE_CHECKING:  # built above this layer; here only in signatures
    from mailer.runtime import Runtime

__all__ = ["BatchResult", "pause_with_error", "send_batch"]


@dataclass(frozen=True)
class BatchResult:
    sent: int = 0
    failed: int = 0
    unknown: int = 0
    skipped: int = 0
    # Rows put back in the queue: the batch must be tried again (after retry_after).
    requeued: int = 0
    retry_after: float | None = None
    error: str = ""
    # The provider's answer to the request: "ok", or what kind of error ("transient",
    # "permanent", "uncertain", "refused"); empty when no request went out.
    provider_status: str = ""


@dataclass(frozen=True)
class _Campaign:
    """What a batch reads of its campaign (the frozen edition only when ``_content`` has it
    not: it is the campaign's largest field, and the same for every batch)."""

    id: int
    slug: str
    tracking: bool
    created_at: dt.datetime


@dataclass(frozen=True)
class _Claimed:
    delivery_id: int
    subscriber_id: int
    attempts: int  # this claim included
    email: str
    name: str


def send_batch(rt: Runtime, campaign_id: int, batch: int) -> BatchResult:
    """Send what is still queued in batch ``batch`` of campaign ``campaign_id``, and say
    what became of it (``telemetry``: a log record and the metrics)."""
    started = time.monotonic()
    result = _send(rt, campaign_id, batch)
    seconds = time.monotonic() - started
    telemetry.batch_done(rt.settings.backend, campaign_id, batch, result, seconds)
    _freeze_once()
    return result


_frozen = False


def _freeze_once() -> None:
    """After a process's first batch, set what is alive then (the modules, the runtime's
    parts, the campaign's content: it lives as long as the process) out of the cyclic
    collector's reach. Each batch makes tens of thousands of short-lived objects, which
    set off full collections; walking the whole heap, those took a quarter of a batch's
    time (100 ms each, one every ten batches), and now walk only what is new."""
    global _frozen
    if not _frozen:
        _frozen = True
        # No gc.collect() first: in a Celery pool process it collects what the process
        # needs to exit cleanly on SIGTERM.
        gc.freeze()


def _send(rt: Runtime, campaign_id: int, batch: int) -> BatchResult:
    try:
        backend = rt.backend  # built before anything is claimed: a bad setting claims nothing
    except ConfigError as exc:
        pause_with_error(rt, campaign_id, str(exc))
        return BatchResult(error=str(exc))
    if rt.settings.send_rate:
        with rt.sessions() as session:
            waiting = session.scalar(
                select(func.count())
                .select_from(Delivery)
                .where(_in_batch(campaign_id, batch), Delivery.status == _QUEUED)
            )
        rt.send_rate.take(waiting or 0)  # before the claim, so claimed rows go out at once

    with rt.sessions.begin() as session:
        # Shared lock: a cancel waits for this claim to commit, so a new campaign of the
        # same post sees these rows as in flight and leaves their readers out.
        row = session.execute(
            select(Campaign.status, Campaign.slug, Campaign.tracking, Campaign.created_at)
            .where(Campaign.id == campaign_id)
            .with_for_update(read=True, key_share=True)
        ).one_or_none()
        if row is None or row.status != CampaignState.SENDING:
            return BatchResult()  # paused or cancelled: the rows wait in the queue
        campaign = _Campaign(campaign_id, row.slug, row.tracking, row.created_at)
        claimed, skipped = _claim(session, campaign, batch)
        outgoing = _batch(rt, session, campaign, claimed)
    if not claimed:
        _finish(rt, campaign_id, batch)
        return BatchResult(skipped=skipped)
    # Readers whose name may not go into a header fail alone, whatever the request's fate.
    outgoing, unsafe = without_unsafe_readers(outgoing)
    refused = [Outcome(key, "failed", error=reason) for key, reason in unsafe.items()]
    sending = [c for c in claimed if delivery_key(campaign_id, c.delivery_id) not in unsafe]

    status = "ok" if sending else ""
    try:
        outcomes = backend.send(outgoing) if sending else []
    except ConfigError as exc:  # refused credentials: nothing went out, nothing will
        _release(rt, [c.delivery_id for c in claimed])
        pause_with_error(rt, campaign_id, str(exc))
        return BatchResult(skipped=skipped, error=str(exc), provider_status="refused")
    except TransientDeliveryError as exc:
        _release(rt, [c.delivery_id for c in claimed])
        return BatchResult(
            skipped=skipped,
            requeued=len(claimed),
            retry_after=exc.retry_after,
            error=str(exc),
            provider_status="transient",
        )
    except UncertainDeliveryError as exc:
        status = "uncertain"
        outcomes = [
            Outcome(delivery_key(campaign_id, c.delivery_id), "unknown", error=str(exc))
            for c in sending
        ]
    except PermanentDeliveryError as exc:
        status = "permanent"
        outcomes = [
            Outcome(delivery_key(campaign_id, c.delivery_id), "failed", error=str(exc))
            for c in sending
        ]
        _count_error(rt, campaign_id, str(exc))

    result = _record(rt, campaign_id, claimed, outcomes + refused, skipped)
    _finish(rt, campaign_id, batch, outcomes_recorded=True)
    return replace(result, provider_status=status)


_table = Delivery.__table__


def _in_batch(campaign_id: int, batch: int) -> ColumnElement[bool]:
    return (Delivery.campaign_id == campaign_id) & (Delivery.batch == batch)


# Written into the statements, as the partial indexes' condition is: once the driver has
# prepared the claim, PostgreSQL may plan it for any parameters, and with the state a
# parameter no partial index matches; the claim then read every row of the campaign (at
# 1M readers, most of PostgreSQL's time).
_QUEUED: ColumnElement[str] = literal_column(f"'{DeliveryState.QUEUED.value}'")


def _claim(session: Session, campaign: _Campaign, batch: int) -> tuple[list[_Claimed], int]:
    """Atomically take the batch's queued rows (SKIP LOCKED on PostgreSQL), skipping the
    readers no longer in the post's audience (``subscribers.audience``: they left the list
    since the ledger was filled). (Core statements: this runs for every batch, and the
    ORM's bookkeeping would cost more than the SQL.)"""
    d = _table
    queued = (
        select(d.c.id)
        .where(d.c.campaign_id == campaign.id, d.c.batch == batch, d.c.status == _QUEUED)
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    connection = session.connection()
    claim = (
        update(d)
        .where(among_locked(connection, d.c.id, queued))
        .values(status=DeliveryState.SENDING, claimed_at=utcnow(), attempts=d.c.attempts + 1)
        .returning(d.c.id, d.c.subscriber_id, d.c.attempts)
    )
    claimed, gone = [], []
    for delivery_id, subscriber_id, attempts, reader in audience.claimed_readers(
        connection, claim, campaign.slug, campaign.id
    ):
        if reader is None:
            gone.append(delivery_id)
        else:
            claimed.append(_Claimed(delivery_id, subscriber_id, attempts, *reader))
    if gone:
        connection.execute(
            update(d)
            .where(d.c.id.in_(gone))
            .values(status=DeliveryState.SKIPPED, error="left the list before the send")
        )
    return claimed, len(gone)


@dataclass(frozen=True)
class _Content:
    """What every reader of a campaign gets before their own links are filled in."""

    subject: str
    html: str
    text: str
    slug: str


# Built once per campaign per process (the edition is frozen, so it cannot go stale).
_contents: dict[tuple[int, dt.datetime], _Content] = {}


def _content(rt: Runtime, session: Session, campaign: _Campaign) -> _Content:
    key = (campaign.id, campaign.created_at)
    if key not in _contents:
        frozen = select(Campaign.edition).where(Campaign.id == campaign.id)
        edition = Edition.from_dict(session.execute(frozen).scalar_one())
        html, text = edition.html, edition.text
        if campaign.tracking:
            # The link table the click redirects read: positions must agree with it.
            table = list(
                session.scalars(
                    select(CampaignLink.url)
                    .where(CampaignLink.campaign_id == campaign.id)
                    .order_by(CampaignLink.position)
                )
            )
            html, text = track(edition, table, rt.settings.public_url)
        # The web version is the same for every reader: filled once, not per envelope.
        view_url = f"{rt.settings.public_url}/archive/{edition.slug}"
        html = html.replace(VIEW_PLACEHOLDER, escape(view_url, quote=True))
        text = text.replace(VIEW_PLACEHOLDER, view_url)
        if len(_contents) > 16:
            _contents.clear()
        _contents[key] = _Content(edition.subject, html, text, edition.slug)
    return _contents[key]


def _batch(rt: Runtime, session: Session, campaign: _Campaign, claimed: list[_Claimed]) -> Batch:
    settings = rt.settings
    content = _content(rt, session, campaign)
    unsubscribe = f"{settings.public_url}/unsubscribe/"
    envelopes = tuple(
        Envelope(
            email=c.email,
            name=c.name,
            key=delivery_key(campaign.id, c.delivery_id),
            unsubscribe_url=unsubscribe + rt.signer.sign_ids(Purpose.UNSUBSCRIBE, c.subscriber_id),
            extra=tracking_substitutions(rt.signer, campaign.id, c.delivery_id)
            if campaign.tracking
            else {},
        )
        for c in claimed
    )
    return Batch(
        subject=content.subject,
        html=content.html,
        text=content.text,
        sender=Sender(settings.sender_email, settings.sender_name),
        envelopes=envelopes,
        category=content.slug,
        unsubscribe_mailto=settings.unsubscribe_mailto,
    )


def _record(
    rt: Runtime, campaign_id: int, claimed: list[_Claimed], outcomes: list[Outcome], skipped: int
) -> BatchResult:
    """Write each outcome; claimed rows without one were not attempted and are requeued, as
    are rows to retry. A deferred row is queued again with the reason, for its batch's next
    try; at the batch's last try (MAILER_MAX_RETRIES + 1 in all) it fails instead, a soft
    bounce, so that one reader never makes a batch give up."""
    by_key = {o.key: o for o in outcomes}
    now = utcnow()
    tries = rt.settings.max_retries + 1
    counts: Counter[str] = Counter()
    # Rows with the same outcome (a SendGrid batch: all sent, one message id) are written
    # by one statement; rows with outcomes of their own (SMTP, outbox), by primary key.
    same: dict[tuple[str, str, str], list[int]] = {}
    untried = []
    deferred = []  # what the readers queued again were told
    bounces = []
    for c in claimed:
        outcome = by_key.get(delivery_key(campaign_id, c.delivery_id))
        if outcome is None or outcome.status == "retry":
            untried.append(c.delivery_id)
            continue
        status: str  # the outcome's, or the ledger's state it leads to
        bounce: Literal["hard", "soft", "block", ""]
        status, error, bounce = outcome.status, outcome.error, outcome.bounce
        if status == "deferred" and c.attempts < tries:
            status = DeliveryState.QUEUED
            deferred.append(error)
        elif status == "deferred":
            status, bounce = DeliveryState.FAILED, "soft"
            error = f"deferred at each of {c.attempts} tries: {error}"
        if bounce:
            bounces.append(
                Event(
                    kind=EventKind.BOUNCED,
                    at=now,
                    source=rt.settings.backend,
                    campaign_id=campaign_id,
                    delivery_id=c.delivery_id,
                    email=c.email,
                    bounce=bounce,
                    raw={"reply": outcome.error},
                )
            )
        counts[status] += 1
        written = (status, outcome.provider_id[:200], error[:2000])
        same.setdefault(written, []).append(c.delivery_id)
    singles = []
    with rt.sessions.begin() as session:
        connection = session.connection()
        if rt.settings.unknown_policy == "reconcile":  # see the module's docstring
            commit_without_flush(connection)
        for (status, provider_id, error), ids in same.items():
            values = {
                "status": status,
                "sent_at": now if status == "sent" else None,
                "provider_id": provider_id,
                "error": error,
            }
            if len(ids) == 1:
                singles.append({"row_id": ids[0], **values})
            else:
                written_together = among(connection, _table.c.id, ids)
                connection.execute(update(_table).where(written_together).values(**values))
        if singles:  # by primary key; a row erased meanwhile is simply not there to update
            connection.execute(_UPDATE_ONE, singles)
        # Events may have come while these rows were in flight: they settle them now.
        unknown = [i for (status, _, _), ids in same.items() if status == "unknown" for i in ids]
        settle_unknown(session, delivery_ids=unknown)
        if bounces:
            apply(session, record(session, bounces), rt.settings.soft_bounce_limit)
    if untried:
        _release(rt, untried)
    # Why rows went back, for the retry and a give-up message: what stopped the batch
    # first, then what deferred readers were told.
    stopped = [o.error for o in outcomes if o.status in ("retry", "unknown")]
    reasons = [*stopped, *deferred]
    if not reasons and untried:
        reasons = [f"the backend stopped early: {len(untried)} not tried"]
    return BatchResult(
        sent=counts["sent"],
        failed=counts["failed"],
        unknown=counts["unknown"],
        skipped=skipped,
        requeued=len(untried) + len(deferred),
        error=reasons[0] if reasons else "",
    )


_UPDATE_ONE = (
    update(_table)
    .where(_table.c.id == bindparam("row_id"))
    .values(
        status=bindparam("status"),
        sent_at=bindparam("sent_at"),
        provider_id=bindparam("provider_id"),
        error=bindparam("error"),
    )
)


def _release(rt: Runtime, delivery_ids: list[int]) -> None:
    """Give claimed rows back to the queue: nothing went out for them."""
    with rt.sessions.begin() as session:
        session.execute(
            update(_table)
            .where(_table.c.id.in_(delivery_ids), _table.c.status == DeliveryState.SENDING)
            .values(status=DeliveryState.QUEUED, claimed_at=None)
        )


def pause_with_error(rt: Runtime, campaign_id: int, error: str) -> None:
    """Stop a sending campaign for the operator, saying why (its rows stay queued for a
    resume); one that is not sending any more is left as it is."""
    with rt.sessions.begin() as session:
        only = [CampaignState.SENDING]
        if move(
            session,
            campaign_id,
            CampaignState.PAUSED,
            only_from=only,
            strict=False,
            last_error=error[:2000],
        ):
            telemetry.paused(campaign_id, error)


def _count_error(rt: Runtime, campaign_id: int, error: str) -> None:
    """A permanent error; enough of them pause the campaign for the operator to look."""
    with rt.sessions.begin() as session:
        errors = session.scalar(
            update(Campaign)
            .where(Campaign.id == campaign_id)
            .values(errors=Campaign.errors + 1, last_error=error[:2000])
            .returning(Campaign.errors)
        )
        if errors is not None and errors >= rt.settings.max_batch_errors:
            only = [CampaignState.SENDING]
            if move(session, campaign_id, CampaignState.PAUSED, only_from=only, strict=False):
                telemetry.paused(campaign_id, f"{errors} permanent provider errors: {error}")


# The first row still to send in a batch after ``batch``: read from the start of that batch
# in the index of open rows, never across the rows of the batches done (dead entries, until
# a vacuum, which finish_if_done's question would step over, more of them with every batch).
# Not an EXISTS, which the planner may answer with a Seq Scan it prices as meeting an open
# row in its first pages, and which reads the whole ledger when they are elsewhere. The
# states are written into the statement, as the partial index's condition is, so the
# planner can match the two whatever the parameters.
_OPEN_AFTER = text(
    "SELECT batch FROM deliveries WHERE campaign_id = :campaign_id AND batch > :batch"
    f" AND status IN ('{DeliveryState.QUEUED.value}', '{DeliveryState.SENDING.value}')"
    " ORDER BY batch LIMIT 1"
)


def _finish(rt: Runtime, campaign_id: int, batch: int, *, outcomes_recorded: bool = False) -> None:
    """Once outcomes are recorded, pause the campaign if it bounces too much (``brake``);
    end it if this was its last open batch (``finish_if_done``)."""
    with rt.sessions.begin() as session:
        if outcomes_recorded:
            brake.check(session, rt.settings, campaign_id)
        if session.scalar(_OPEN_AFTER, {"campaign_id": campaign_id, "batch": batch}) is None:
            finish_if_done(session, campaign_id)
