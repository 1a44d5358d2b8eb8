"""Every reader exactly once, and the truth about each (issue 11).

A row whose outcome we do not know is settled from the provider's stored events before
anything may send it again, wherever it comes from (a worker killed mid-request, a request
that timed out after SendGrid took it); a campaign with readers still unknown says so
instead of "sent"; a cancelled post is not started again by beat; a batch whose broker
message was lost is handed out again soon, by a sweep that does not queue behind the
batches. In process on SQLite and PostgreSQL, and with real Celery workers on Redis
against the SendGrid stand-in where the fault is a process.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from celery.exceptions import Retry
from sqlalchemy import func, select, update

from mailer.clock import utcnow
from mailer.config import Settings
from mailer.content.post import load_post
from mailer.content.render import Renderer
from mailer.delivery import Outcome
from mailer.delivery.message import Batch
from mailer.errors import TransientDeliveryError, UncertainDeliveryError
from mailer.runtime import Runtime
from mailer.sending.dispatch import (
    CeleryQueue,
    InlineQueue,
    cancel,
    create_campaign,
    pause,
    progress,
    reconcile,
    resume,
    start,
    sweep,
)
from mailer.sending.schedule import send_scheduled_posts
from mailer.store.ledger import Campaign, Delivery, Handover
from mailer.tracking.events import Event, EventKind, apply, record
from testkit.sendgrid_standin import API_KEY, SendGridStandIn
from tests.event_support import deliveries, new_campaign, seed, wait_for, write_post
from tests.test_reconcile import Recording
from tests.test_workers import BROKER, SECRET, worker

LINKS = ["https://example.org/story"]
READERS = [f"reader{i:02d}@example.org" for i in range(40)]
HOUR = dt.timedelta(hours=1)


# ---------------------------------------------------------------- helpers


class UncertainOnce(Recording):
    """Its ``uncertain``-th request gets no answer (a timeout): nobody knows if it went."""

    def __init__(self, uncertain: int) -> None:
        super().__init__()
        self.calls = 0
        self.uncertain = uncertain

    def send(self, batch: Batch) -> list[Outcome]:
        self.calls += 1
        if self.calls == self.uncertain:
            raise UncertainDeliveryError("SendGrid did not answer in time")
        return super().send(batch)


class Hold:
    """A queue that keeps the batches (a broker no worker has taken them from yet)."""

    def __init__(self) -> None:
        self.handed: list[tuple[int, list[int]]] = []

    def enqueue(self, campaign_id: int, batches) -> None:
        self.handed.append((campaign_id, list(batches)))


@pytest.fixture
def make_rt(
    settings: Settings, database_url: str, tmp_path: Path
) -> Iterator[Callable[..., Runtime]]:
    made: list[Runtime] = []

    def make(backend: Any = None, **changes: Any) -> Runtime:
        here = {"database_url": database_url, "outbox_dir": tmp_path / "outbox", "batch_size": 3}
        rt = Runtime(settings.model_copy(update={**here, **changes}))
        if backend is not None:
            rt.backend = backend  # cached_property: the instance attribute wins
        made.append(rt)
        return rt

    yield make
    for rt in made:
        rt.close()


def sample_campaign(rt: Runtime, tmp_path: Path, readers: list[str]) -> int:
    seed(rt.sessions, readers)
    return new_campaign(rt, write_post(tmp_path, "truth-weekly", "Truth weekly", LINKS))


def keys(rt: Runtime, campaign_id: int) -> dict[str, str]:
    """Each reader's delivery key, as the provider's events carry it."""
    return {e: f"{campaign_id}-{d.id}" for e, d in deliveries(rt.sessions, campaign_id).items()}


def statuses(rt: Runtime, campaign_id: int) -> dict[str, str]:
    return {e: d.status for e, d in deliveries(rt.sessions, campaign_id).items()}


def accepted(key: str, kind: EventKind = EventKind.PROCESSED) -> Event:
    """SendGrid's event that it took the delivery ``key`` (campaign-delivery), as the webhook
    makes it."""
    campaign_id, delivery_id = (int(part) for part in key.split("-"))
    return Event(
        kind,
        utcnow(),
        "sendgrid",
        campaign_id=campaign_id,
        delivery_id=delivery_id,
        provider_event_id=uuid.uuid4().hex,
    )


def webhook(rt: Runtime, events: list[Event]) -> None:
    """What the event webhook does with ``events``: store them, then apply the new ones."""
    with rt.sessions.begin() as session:
        apply(session, record(session, events), rt.settings.soft_bounce_limit)


def strand(rt: Runtime, campaign_id: int, age: dt.timedelta) -> None:
    """Leave every queued row as a worker that died mid-request would: claimed, no outcome."""
    with rt.sessions.begin() as session:
        session.execute(
            update(Delivery)
            .where(Delivery.campaign_id == campaign_id, Delivery.status == "queued")
            .values(status="sending", claimed_at=utcnow() - age, attempts=1)
        )


# ---------------------------------------------------------------- 1. settle before resending


@pytest.mark.parametrize("entry", ["sweep", "reconcile"])
def test_a_dead_workers_rows_settle_from_stored_events_before_any_resend(
    make_rt, tmp_path: Path, entry: str
) -> None:
    """Policy ``resend``: a worker claimed every row, SendGrid took two of the requests'
    readers (their events are stored) and the worker died. The sweep's reaper and
    ``reconcile`` both settle those two first, and send the rest only after the window."""
    recording = Recording()
    rt = make_rt(recording, unknown_policy="resend")
    r = READERS[:6]
    campaign_id = sample_campaign(rt, tmp_path, r)
    assert start(rt, campaign_id, Hold())
    strand(rt, campaign_id, dt.timedelta(minutes=20))  # stale: its worker is gone
    key = keys(rt, campaign_id)
    webhook(rt, [accepted(key[r[0]]), accepted(key[r[1]], EventKind.DELIVERED)])

    def run(window: dt.timedelta) -> None:
        if entry == "sweep":
            sweep(rt, InlineQueue(rt), lost_after=HOUR, unknown_window=window)
        else:
            reconcile(rt, campaign_id, InlineQueue(rt), unknown_window=window)

    run(HOUR)  # claimed 20 minutes ago: events may still come for the other four
    assert statuses(rt, campaign_id) == {e: "sent" if e in r[:2] else "unknown" for e in r}
    assert recording.keys == []
    assert progress(rt, campaign_id).status == "unsettled"

    run(dt.timedelta(minutes=10))  # no event in ten minutes: those four were not sent
    assert sorted(recording.keys) == sorted(key[e] for e in r[2:])
    run(dt.timedelta(0))
    assert len(recording.keys) == 4  # once each, and never the two SendGrid took
    state = progress(rt, campaign_id)
    assert (state.status, state.sent, state.unknown) == ("sent", 6, 0)


# ---------------------------------------------------------------- 2. events while in flight


class AnswerLost(Recording):
    """SendGrid takes the request and its events reach the webhook at once, while the rows
    are still ``sending``; then the answer is lost and the request times out."""

    def __init__(self, rt: Runtime) -> None:
        super().__init__()
        self.rt = rt

    def send(self, batch: Batch) -> list[Outcome]:
        webhook(self.rt, [accepted(e.key) for e in batch.envelopes])
        raise UncertainDeliveryError("SendGrid did not answer in time: read timed out")


def test_events_that_came_while_a_row_was_in_flight_settle_it(make_rt, tmp_path: Path) -> None:
    rt = make_rt()
    r = READERS[:3]
    campaign_id = sample_campaign(rt, tmp_path, r)
    rt.backend = AnswerLost(rt)
    assert start(rt, campaign_id, InlineQueue(rt))
    # The periodic sweep settles them from the stored events, without a person.
    sweep(rt, Hold(), lost_after=HOUR, unknown_window=HOUR)
    assert statuses(rt, campaign_id) == dict.fromkeys(r, "sent")
    assert progress(rt, campaign_id).status == "sent"


# ---------------------------------------------------------------- 3. unsettled, not sent


def test_a_campaign_with_unknown_readers_is_unsettled_until_they_are_known(
    make_rt, tmp_path: Path
) -> None:
    backend = UncertainOnce(uncertain=2)
    rt = make_rt(backend)
    r = READERS[:6]
    campaign_id = sample_campaign(rt, tmp_path, r)
    assert start(rt, campaign_id, InlineQueue(rt))
    state = progress(rt, campaign_id)
    assert (state.status, state.sent, state.unknown) == ("unsettled", 3, 3)
    key = keys(rt, campaign_id)
    unknown = [e for e, s in statuses(rt, campaign_id).items() if s == "unknown"]

    webhook(rt, [accepted(key[unknown[0]])])  # one of them, accepted after all
    state = progress(rt, campaign_id)
    assert (state.status, state.sent, state.unknown) == ("unsettled", 4, 2)

    # Resending is allowed only once the window has passed with no event.
    done = reconcile(rt, campaign_id, InlineQueue(rt), resend=True, unknown_window=HOUR)
    assert (done.settled, done.requeued, done.still_unknown) == (0, 0, 2)
    done = reconcile(rt, campaign_id, InlineQueue(rt), resend=True, unknown_window=dt.timedelta(0))
    assert (done.settled, done.requeued, done.still_unknown) == (0, 2, 0)
    assert sorted(backend.keys[-2:]) == sorted(key[e] for e in unknown[1:])
    assert key[unknown[0]] not in backend.keys
    state = progress(rt, campaign_id)
    assert (state.status, state.sent, state.unknown) == ("sent", 6, 0)


# ---------------------------------------------------------------- 4. a cancelled post


FRIDAY = dt.date(2026, 2, 6)


def test_a_cancelled_post_is_never_started_again_by_beat(make_rt, tmp_path: Path) -> None:
    posts = tmp_path / "posts"
    posts.mkdir()
    post = write_post(posts, "2026-02-06-friday", "Friday edition", LINKS)
    recording = Recording()
    rt = make_rt(recording, posts_dir=posts)
    seed(rt.sessions, READERS[:9])
    hold = Hold()
    assert send_scheduled_posts(rt, hold, FRIDAY) == ["2026-02-06-friday"]
    campaign_id = hold.handed[0][0]
    InlineQueue(rt).enqueue(campaign_id, [0])  # three readers got it, then the operator
    cancel(rt, campaign_id)  # cancelled the campaign

    # A redelivered beat task, a late second beat: nothing starts.
    assert send_scheduled_posts(rt, InlineQueue(rt), FRIDAY) == []
    with rt.sessions() as session:
        assert session.scalar(select(func.count()).select_from(Campaign)) == 1
    assert len(recording.keys) == 3

    # Only an explicit request starts the post again, for the readers it did not reach.
    edition = Renderer(rt.settings).render(load_post(post))
    again, new = create_campaign(rt, edition, post, again=True)
    assert new and again.id != campaign_id
    assert start(rt, again.id, InlineQueue(rt))
    assert progress(rt, again.id).sent == 6
    assert len(recording.keys) == 9


# ---------------------------------------------------------------- 8. lost batches, resume


def test_the_sweep_hands_out_again_only_the_batches_no_task_holds(
    make_rt, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Batch 1's message was lost long ago; batch 2 waits its turn in the broker; batch 3's
    task backs off after a 429. The campaign is busy (batch 0 just went), yet the sweep hands
    out batch 1 again at once, and only it."""
    import worker

    class Refusing:
        name = "refusing"

        def send(self, batch: Batch) -> list[Outcome]:
            raise TransientDeliveryError("SendGrid answered 429", retry_after=600)

    rt = make_rt(Recording())
    campaign_id = sample_campaign(rt, tmp_path, READERS[:12])
    assert start(rt, campaign_id, Hold())
    InlineQueue(rt).enqueue(campaign_id, [0])
    backing_off = make_rt(Refusing())
    monkeypatch.setattr(worker, "_runtime", backing_off)
    with pytest.raises(Retry):  # called directly, the task raises its retry
        worker.send_batch_task(campaign_id, 3)
    with rt.sessions.begin() as session:
        session.execute(
            update(Handover)
            .where(Handover.campaign_id == campaign_id, Handover.batch == 1)
            .values(handed_at=utcnow() - HOUR)
        )

    held = Hold()
    sweep(rt, held, lost_after=dt.timedelta(minutes=5), unknown_window=HOUR)
    assert held.handed == [(campaign_id, [1])]
    sweep(rt, held, lost_after=dt.timedelta(minutes=5), unknown_window=HOUR)
    assert held.handed == [(campaign_id, [1])]  # handed now: not again at the next sweep


def test_resume_counts_only_rows_really_in_flight(make_rt, tmp_path: Path) -> None:
    rt = make_rt()
    campaign_id = sample_campaign(rt, tmp_path, READERS[:9])
    assert start(rt, campaign_id, Hold())
    pause(rt, campaign_id)
    assert resume(rt, campaign_id, Hold()) == 0  # an ordinary resume: nothing was in flight
    pause(rt, campaign_id)
    with rt.sessions.begin() as session:  # a sender took batch 0 and stopped answering
        session.execute(
            update(Delivery)
            .where(Delivery.campaign_id == campaign_id, Delivery.batch == 0)
            .values(status="sending", claimed_at=utcnow())
        )
    assert resume(rt, campaign_id, Hold()) == 3


# ---------------------------------------------------------------- real workers


def _settings(database_url: str, standin: SendGridStandIn, **extra: object) -> Settings:
    return Settings(
        **{
            "database_url": database_url,
            "broker_url": BROKER,
            "backend": "sendgrid",
            "sendgrid_host": standin.url,
            "sendgrid_api_key": API_KEY,
            "public_url": "https://mail.example.org",
            "site_url": "https://blog.example.org",
            "secret_keys": [SECRET],
            "batch_size": 10,
            **extra,
        }
    )


def _start(rt: Runtime, tmp_path: Path, readers: list[str], slug: str = "truth-weekly") -> int:
    """A campaign to ``readers``, its batches handed to the broker."""
    seed(rt.sessions, readers)
    campaign_id = new_campaign(rt, write_post(tmp_path, slug, slug.title(), LINKS))
    queue = CeleryQueue(BROKER)
    try:
        assert start(rt, campaign_id, queue)
    finally:
        queue.close()
    return campaign_id


def _ended(rt: Runtime, campaign_id: int) -> Callable[[], bool]:
    return lambda: progress(rt, campaign_id).status != "sending"


@pytest.fixture
def runtimes() -> Iterator[list[Runtime]]:
    made: list[Runtime] = []
    yield made
    for rt in made:
        rt.close()


@pytest.mark.usefixtures("broker")
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_killed_workers_accepted_rows_are_not_sent_again_under_resend(
    database_url: str, runtimes: list[Runtime], tmp_path: Path
) -> None:
    """SIGKILL while SendGrid holds two accepted requests; their events are stored. Under
    the resend policy the reaper settles those rows from the events instead of resending."""
    with SendGridStandIn() as standin:
        settings = _settings(
            database_url, standin, unknown_policy="resend", stale_claim_seconds=2, sweep_seconds=1
        )
        rt = Runtime(settings)
        runtimes.append(rt)
        standin.stall(2, accept=True)
        with worker(settings, tmp_path) as first:
            campaign_id = _start(rt, tmp_path, READERS)
            wait_for(lambda: len(standin.stalled) == 2, 30)
            os.killpg(first.pid, signal.SIGKILL)  # both pool processes, mid-request
            first.wait()
        with rt.sessions.begin() as session:  # SendGrid's events for what it took
            record(session, [accepted(k) for k in standin.stalled_keys()])
        with worker(settings, tmp_path, beat=True):
            wait_for(_ended(rt, campaign_id), 60)
    assert max(standin.recipients.values()) == 1  # nobody twice
    assert set(standin.recipients) == set(READERS)
    state = progress(rt, campaign_id)
    assert (state.status, state.sent) == ("sent", len(READERS))


@pytest.mark.usefixtures("broker")
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_timed_out_request_settles_from_the_events_that_came_meanwhile(
    database_url: str, runtimes: list[Runtime], tmp_path: Path
) -> None:
    """SendGrid takes a request but never answers; its events arrive while the rows are
    still ``sending``. Once the request times out, they settle without anyone's help."""
    with SendGridStandIn() as standin:
        settings = _settings(database_url, standin, delivery_timeout=1, sweep_seconds=1)
        rt = Runtime(settings)
        runtimes.append(rt)
        standin.stall(1, accept=True)
        with worker(settings, tmp_path, beat=True):
            campaign_id = _start(rt, tmp_path, READERS[:10])
            wait_for(lambda: len(standin.stalled) == 1, 30)
            with rt.sessions.begin() as session:  # stored while the rows are in flight
                record(session, [accepted(k) for k in standin.stalled_keys()])
            wait_for(lambda: progress(rt, campaign_id).sent == 10, 60)
    assert progress(rt, campaign_id).status == "sent"
    assert standin.recipients == dict.fromkeys(READERS[:10], 1)


@pytest.mark.usefixtures("broker")
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_requests_that_never_reached_sendgrid_leave_the_campaign_unsettled(
    database_url: str, runtimes: list[Runtime], tmp_path: Path
) -> None:
    """Under the default policy a request that hangs without reaching SendGrid leaves its
    readers unknown: the campaign is ``unsettled``, not ``sent``; after the window with no
    event, ``reconcile`` with resend sends them, once."""
    with SendGridStandIn() as standin:
        settings = _settings(database_url, standin, delivery_timeout=1)
        rt = Runtime(settings)
        runtimes.append(rt)
        standin.stall(1, accept=False)
        with worker(settings, tmp_path):
            campaign_id = _start(rt, tmp_path, READERS[:20])
            wait_for(_ended(rt, campaign_id), 60)
            state = progress(rt, campaign_id)
            assert (state.status, state.sent, state.unknown) == ("unsettled", 10, 10)
            queue = CeleryQueue(BROKER)
            try:
                done = reconcile(
                    rt, campaign_id, queue, resend=True, unknown_window=dt.timedelta(0)
                )
            finally:
                queue.close()
            assert done.requeued == 10
            wait_for(_ended(rt, campaign_id), 60)
    assert progress(rt, campaign_id).status == "sent"
    assert standin.recipients == dict.fromkeys(READERS[:20], 1)


@pytest.mark.usefixtures("broker")
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_the_sweep_does_not_wait_behind_the_batches(
    database_url: str, runtimes: list[Runtime], tmp_path: Path
) -> None:
    """A worker died holding campaign A's rows; campaign B has sixty batches waiting in the
    broker. The documented `celery -A worker worker` runs beat's sweep while most of B's
    batches still wait: the sweep has its own queue."""
    with SendGridStandIn(delay=0.5) as standin:
        settings = _settings(database_url, standin, batch_size=5, sweep_seconds=1)
        rt = Runtime(settings)
        runtimes.append(rt)
        a = sample_campaign(rt, tmp_path, READERS[:5])
        assert start(rt, a, Hold())
        strand(rt, a, HOUR)  # only the sweep can settle these
        b = _start(rt, tmp_path, [f"b{i:03d}@example.org" for i in range(300)], "b-weekly")
        with worker(settings, tmp_path, beat=True):
            wait_for(lambda: progress(rt, a).sending == 0, 60)
            waiting = progress(rt, b).queued
    # More than the two batches the worker holds: the sweep did not wait for the queue.
    assert waiting > 2 * settings.batch_size, waiting
