"""The sending pipeline run inline (no broker) on SQLite and PostgreSQL.

Campaigns freeze their edition, the ledger holds exactly the eligible readers, every
one of them gets exactly one message in the outbox, and whatever the backend does
(refuse for a while, refuse for good, go silent, stop early) or a worker does (die
mid-batch) nobody is missed and nobody gets it twice.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import email
import email.policy
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from email.message import EmailMessage
from pathlib import Path

import pytest
from sqlalchemy import event, func, select, update
from sqlalchemy.orm import Session

from mailer.clock import utcnow
from mailer.config import Settings
from mailer.content.post import load_post
from mailer.content.render import Renderer
from mailer.delivery import Outcome
from mailer.delivery.message import Batch
from mailer.delivery.outbox import OutboxBackend
from mailer.edition import Edition
from mailer.errors import (
    PermanentDeliveryError,
    TokenError,
    TransientDeliveryError,
    UncertainDeliveryError,
)
from mailer.runtime import Runtime
from mailer.sending.batch import send_batch
from mailer.sending.dispatch import (
    InlineQueue,
    cancel,
    create_campaign,
    fill_chunk,
    pause,
    progress,
    resume,
    settle,
    start,
    start_due,
    sweep,
)
from mailer.store.ledger import (
    Campaign,
    CampaignState,
    Delivery,
    DeliveryState,
    Handover,
    IllegalTransition,
    may_follow,
)
from mailer.tokens import Purpose, Signer
from subscribers import store
from subscribers.models import Status, Subscriber, SuppressionReason

BATCH = 7
HOUR = dt.timedelta(hours=1)
POST = """---
title: The pipeline weekly
scheduled: 2026-02-06
---
An opening paragraph for the readers, with [a link](https://example.org/story).

More text below it.
"""


# ---------------------------------------------------------------- fixtures and helpers


@pytest.fixture
def rt(settings: Settings, database_url: str, tmp_path: Path) -> Iterator[Runtime]:
    runtime = Runtime(
        settings.model_copy(
            update={
                "database_url": database_url,
                "outbox_dir": tmp_path / "outbox",
                "batch_size": BATCH,
            }
        )
    )
    yield runtime
    runtime.engine.dispose()


_extra_runtimes: list[Runtime] = []


@pytest.fixture(autouse=True)
def _dispose_extra_runtimes() -> Iterator[None]:
    """Close the engines of the runtimes a test made, even when it fails half-way."""
    yield
    while _extra_runtimes:
        _extra_runtimes.pop().engine.dispose()


def configure(rt: Runtime, **changes: object) -> Runtime:
    """The same database with some settings changed (a fresh Runtime, like a new process)."""
    other = Runtime(rt.settings.model_copy(update=changes))
    _extra_runtimes.append(other)
    return other


class Sleeps(list):
    """Stands in for time.sleep: records each delay instead of waiting."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def inline(rt: Runtime) -> tuple[InlineQueue, Sleeps]:
    queue = InlineQueue(rt)
    sleeps = Sleeps()
    queue.sleep = sleeps
    return queue, sleeps


class HeldQueue:
    """A queue that only remembers what it was handed (a broker nobody consumes yet)."""

    def __init__(self) -> None:
        self.handed: list[tuple[int, list[int]]] = []

    def enqueue(self, campaign_id: int, batches: Iterable[int]) -> None:
        self.handed.append((campaign_id, list(batches)))


OTHERS = ("pending", "unsubscribed", "suppressed", "pending")


@dataclasses.dataclass
class Audience:
    eligible: dict[str, int]  # email -> subscriber id
    others: dict[str, int]


def seed(rt: Runtime, confirmed: int = 20) -> Audience:
    """Confirmed readers interleaved with pending, unsubscribed and suppressed-but-confirmed."""
    consent = store.Consent(source="test", text="test consent")
    eligible: dict[str, int] = {}
    others: dict[str, int] = {}
    with rt.sessions.begin() as session:
        for i in range(confirmed):
            email_ = f"reader{i:02d}@example.org"
            added = store.add(session, email_, consent, name=f"Reader {i}", status=Status.CONFIRMED)
            assert added.subscriber is not None
            eligible[email_] = added.subscriber.id
            if i < len(OTHERS):  # someone who is not eligible right after, to mix the ids
                kind = OTHERS[i]
                other = f"{kind}{i}@example.net"
                status = Status.PENDING if kind == "pending" else Status.CONFIRMED
                sub = store.add(session, other, consent, status=status).subscriber
                assert sub is not None
                if kind == "unsubscribed":
                    store.unsubscribe(session, sub, how="test")
                elif kind == "suppressed":
                    # Still "confirmed" in the subscribers table, but on the suppression list.
                    store.suppress(session, sub.email_hash, SuppressionReason.MANUAL, "test")
                others[other] = sub.id
    return Audience(eligible, others)


def edition_from(rt: Runtime, path: Path) -> Edition:
    return Renderer(rt.settings).render(load_post(path))


def post_file(tmp_path: Path, text: str = POST, name: str = "pipeline.md") -> Path:
    path = tmp_path / name
    path.write_text(text, "utf-8")
    return path


def new_campaign(rt: Runtime, tmp_path: Path) -> int:
    path = post_file(tmp_path)
    campaign, new = create_campaign(rt, edition_from(rt, path), path)
    assert new
    return campaign.id


def outbox(rt: Runtime) -> dict[str, EmailMessage]:
    """The outbox by file name, each message parsed as a mail program would."""
    folder = rt.settings.outbox_dir
    if not folder.exists():
        return {}
    return {
        path.name: email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        for path in sorted(folder.glob("*.eml"))
    }


def recipients_in_outbox(rt: Runtime) -> list[str]:
    return sorted(message["To"].addresses[0].addr_spec for message in outbox(rt).values())


def ledger(rt: Runtime, campaign_id: int) -> list[Delivery]:
    with rt.sessions() as session:
        return list(
            session.scalars(
                select(Delivery).where(Delivery.campaign_id == campaign_id).order_by(Delivery.id)
            )
        )


def status_of(rt: Runtime, campaign_id: int) -> str:
    with rt.sessions() as session:
        campaign = session.get(Campaign, campaign_id)
        assert campaign is not None
        return campaign.status


def by_subscriber(rt: Runtime, campaign_id: int) -> dict[int, Delivery]:
    return {row.subscriber_id: row for row in ledger(rt, campaign_id)}


def unsubscribe_token_subscriber(signer: Signer, token: str) -> int:
    """The subscriber id an unsubscribe token carries, checked with the project's Signer (the
    compact ``sign_ids`` form where the Signer has it, else the ``sign`` form)."""
    if hasattr(signer, "verify_ids"):
        try:
            return signer.verify_ids(Purpose.UNSUBSCRIBE, token, 1)[0]
        except TokenError:
            pass
    return signer.verify(Purpose.UNSUBSCRIBE, token)


# ---------------------------------------------------------------- creating and starting


def test_create_campaign_freezes_the_edition(rt: Runtime, tmp_path: Path) -> None:
    audience = seed(rt, confirmed=3)
    path = post_file(tmp_path)
    original = edition_from(rt, path)
    campaign, new = create_campaign(rt, original, path)
    assert new and campaign.status == CampaignState.DRAFT
    # Scheduled, so started: from here on the edition is frozen.
    assert start(rt, campaign.id, inline(rt)[0], at=utcnow() + dt.timedelta(days=1))

    path.write_text(
        POST.replace("The pipeline weekly", "A rewritten title").replace(
            "An opening paragraph", "A changed opening"
        ),
        "utf-8",
    )
    changed = edition_from(rt, path)
    assert changed.subject == "A rewritten title"  # the file really changed

    again, new = create_campaign(rt, changed, path)
    assert not new and again.id == campaign.id
    with rt.sessions() as session:
        stored = session.get(Campaign, campaign.id)
        assert stored is not None
        frozen = stored.frozen_edition()
    assert frozen == original
    assert frozen.subject == "The pipeline weekly" and "A changed opening" not in frozen.html

    queue, _ = inline(rt)
    assert start(rt, campaign.id, queue)
    messages = list(outbox(rt).values())
    assert len(messages) == len(audience.eligible) == 3
    for message in messages:
        assert message["Subject"] == "The pipeline weekly"
        text = message.get_body(("plain",)).get_content()
        assert "An opening paragraph" in text and "A changed opening" not in text


def test_creating_and_starting_twice_sends_once(rt: Runtime, tmp_path: Path) -> None:
    audience = seed(rt, confirmed=9)
    path = post_file(tmp_path)
    first, new = create_campaign(rt, edition_from(rt, path), path)
    assert new
    second, new_again = create_campaign(rt, edition_from(rt, path), path)
    assert not new_again and second.id == first.id
    with rt.sessions() as session:
        assert session.scalar(select(func.count()).select_from(Campaign)) == 1

    queue, _ = inline(rt)
    assert start(rt, first.id, queue) is True
    sent = outbox(rt)
    assert len(sent) == len(audience.eligible)
    mtimes = {name: (rt.settings.outbox_dir / name).stat().st_mtime_ns for name in sent}

    held = HeldQueue()
    assert start(rt, first.id, held) is False
    assert start(rt, first.id, queue) is False
    assert held.handed == []
    assert outbox(rt).keys() == sent.keys()
    assert {n: (rt.settings.outbox_dir / n).stat().st_mtime_ns for n in sent} == mtimes
    assert [row.attempts for row in ledger(rt, first.id)] == [1] * len(audience.eligible)
    # Once sent, creating it again still finds the same campaign.
    third, new_third = create_campaign(rt, edition_from(rt, path), path)
    assert not new_third and third.id == first.id and third.status == CampaignState.SENT


def test_two_starts_at_once_start_the_campaign_once(rt: Runtime, tmp_path: Path) -> None:
    """Two processes (two beats, or two `mailer send`) start the same campaign at the same
    moment. The first one reads the campaign and is held there while the second runs; on
    PostgreSQL the second waits for the first's row lock, on any database only one may win."""
    audience = seed(rt, confirmed=10)
    campaign_id = new_campaign(rt, tmp_path)
    first, second = configure(rt), configure(rt)  # each with its own engine, like a process
    first.sessions, second.sessions  # noqa: B018  (schema checked before the race)
    second_done = threading.Event()
    held: list[str] = []

    @event.listens_for(first.engine, "after_cursor_execute")
    def hold_after_reading(conn, cursor, statement, parameters, context, executemany) -> None:
        if (
            not held
            and statement.lstrip().upper().startswith("SELECT")
            and ("FROM campaigns" in statement)
        ):
            held.append(statement)
            second_done.wait(3)

    results: dict[str, bool] = {}
    errors: list[BaseException] = []

    def run_first() -> None:
        try:
            results["first"] = start(first, campaign_id, inline(first)[0])
        except BaseException as exc:  # reported below
            errors.append(exc)

    thread = threading.Thread(target=run_first)
    thread.start()
    for _ in range(1000):
        if held:
            break
        time.sleep(0.01)
    assert held, "the first start never read the campaign"
    try:
        results["second"] = start(second, campaign_id, inline(second)[0])
    finally:
        second_done.set()
        thread.join(30)
    first.engine.dispose()
    second.engine.dispose()

    assert errors == []
    assert sorted(results.values()) == [False, True], results
    assert status_of(rt, campaign_id) == CampaignState.SENT
    assert recipients_in_outbox(rt) == sorted(audience.eligible)
    assert [row.attempts for row in ledger(rt, campaign_id)] == [1] * len(audience.eligible)


def test_start_fills_the_ledger_with_exactly_the_eligible_readers(
    rt: Runtime, tmp_path: Path
) -> None:
    audience = seed(rt, confirmed=20)
    campaign_id = new_campaign(rt, tmp_path)
    held = HeldQueue()
    assert start(rt, campaign_id, held)

    rows = ledger(rt, campaign_id)
    subscriber_ids = [row.subscriber_id for row in rows]
    assert sorted(subscriber_ids) == sorted(audience.eligible.values())
    assert len(set(subscriber_ids)) == len(subscriber_ids)
    assert all(row.status == DeliveryState.QUEUED and row.attempts == 0 for row in rows)
    # Batches are numbered in subscriber id order, BATCH readers each.
    ordered = sorted(rows, key=lambda row: row.subscriber_id)
    assert [row.batch for row in ordered] == [i // BATCH for i in range(len(ordered))]
    with rt.sessions() as session:
        campaign = session.get(Campaign, campaign_id)
        assert campaign is not None
        assert campaign.status == CampaignState.SENDING and campaign.started_at is not None
        assert (campaign.recipients, campaign.batches) == (20, 3)
    assert held.handed == [(campaign_id, [0, 1, 2])]

    # Filling again adds nobody (one row per reader whatever happens).
    with rt.sessions.begin() as session:
        campaign = session.get(Campaign, campaign_id)
        assert campaign is not None
        assert fill_chunk(session, campaign) == range(3, 3)
        assert campaign.recipients == 20
    assert len(ledger(rt, campaign_id)) == 20
    assert outbox(rt) == {}


def test_a_campaign_with_nobody_to_send_to_ends_at_once(rt: Runtime, tmp_path: Path) -> None:
    campaign_id = new_campaign(rt, tmp_path)  # no subscribers at all
    held = HeldQueue()
    assert start(rt, campaign_id, held)
    assert held.handed == [(campaign_id, [])]
    p = progress(rt, campaign_id)
    assert (p.status, p.recipients, p.done) == ("sent", 0, 0)
    assert p.finished_at is not None and outbox(rt) == {}


def test_every_eligible_reader_gets_exactly_one_message(rt: Runtime, tmp_path: Path) -> None:
    audience = seed(rt, confirmed=20)
    campaign_id = new_campaign(rt, tmp_path)
    queue, sleeps = inline(rt)
    assert start(rt, campaign_id, queue)

    assert status_of(rt, campaign_id) == CampaignState.SENT
    assert sleeps == []
    rows = by_subscriber(rt, campaign_id)
    assert all(row.status == DeliveryState.SENT and row.attempts == 1 for row in rows.values())
    assert all(row.sent_at is not None and row.provider_id for row in rows.values())

    messages = outbox(rt)
    assert len(messages) == len(audience.eligible)
    assert recipients_in_outbox(rt) == sorted(audience.eligible)
    signer = Signer(rt.settings.secret_keys)
    domain = rt.settings.sender_email.rpartition("@")[2]
    for name, message in messages.items():
        address = message["To"].addresses[0].addr_spec
        subscriber_id = audience.eligible[address]
        delivery = rows[subscriber_id]
        assert name == f"{campaign_id}-{delivery.id}.eml"
        assert message["Message-ID"].startswith(f"<{campaign_id}-{delivery.id}.")
        assert message["Message-ID"].endswith(f"@{domain}>")
        assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        links = re.findall(r"<([^>]+)>", message["List-Unsubscribe"])
        assert len(links) == 1  # no mailto: none is configured
        prefix = f"{rt.settings.public_url}/unsubscribe/"
        assert links[0].startswith(prefix)
        token = links[0].removeprefix(prefix)
        assert unsubscribe_token_subscriber(signer, token) == subscriber_id
        assert links[0] in message.get_body(("plain",)).get_content()
        assert links[0] in message.get_body(("html",)).get_content()

    # Message-IDs are unique.
    assert len({m["Message-ID"] for m in messages.values()}) == len(messages)
    p = progress(rt, campaign_id)
    assert (p.status, p.recipients, p.sent, p.queued, p.sending) == ("sent", 20, 20, 0, 0)
    assert (p.failed, p.unknown, p.skipped, p.done) == (0, 0, 0, 20)
    assert p.finished_at is not None


def _unsubscribe(session: Session, subscriber: Subscriber) -> None:
    assert store.unsubscribe(session, subscriber, how="test")


def _suppress(session: Session, subscriber: Subscriber) -> None:
    """Still confirmed, but the address is on the suppression list (a list imported, a
    complaint under another record): the claim's own check must catch it."""
    store.suppress(session, subscriber.email_hash, SuppressionReason.MANUAL, "test")


@pytest.mark.parametrize("leave", [_unsubscribe, _suppress], ids=["unsubscribed", "suppressed"])
def test_reader_who_leaves_after_the_ledger_is_filled_is_skipped(
    rt: Runtime, tmp_path: Path, leave: Callable[[Session, Subscriber], None]
) -> None:
    audience = seed(rt, confirmed=10)
    campaign_id = new_campaign(rt, tmp_path)
    held = HeldQueue()
    assert start(rt, campaign_id, held)
    leaver = "reader03@example.org"
    with rt.sessions.begin() as session:
        subscriber = session.get(Subscriber, audience.eligible[leaver])
        assert subscriber is not None
        leave(session, subscriber)

    queue, _ = inline(rt)
    for campaign, batches in held.handed:
        queue.enqueue(campaign, batches)

    rows = by_subscriber(rt, campaign_id)
    assert rows[audience.eligible[leaver]].status == DeliveryState.SKIPPED
    assert rows[audience.eligible[leaver]].error == "left the list before the send"
    others = [row for sid, row in rows.items() if sid != audience.eligible[leaver]]
    assert all(row.status == DeliveryState.SENT for row in others)
    assert recipients_in_outbox(rt) == sorted(set(audience.eligible) - {leaver})
    p = progress(rt, campaign_id)
    assert (p.status, p.recipients, p.sent, p.skipped, p.queued) == ("sent", 10, 9, 1, 0)


# ---------------------------------------------------------------- states


ALLOWED = {
    "draft": {"scheduled", "sending", "cancelled"},
    "scheduled": {"scheduled", "sending", "cancelled", "draft"},
    "sending": {"paused", "unsettled", "sent", "cancelled"},
    "paused": {"sending", "cancelled"},
    "unsettled": {"sent", "sending"},
    "sent": set(),
    "cancelled": set(),
}


@pytest.mark.parametrize("source", list(CampaignState))
@pytest.mark.parametrize("target", list(CampaignState))
def test_only_legal_transitions(source: CampaignState, target: CampaignState) -> None:
    assert may_follow(source, target) == (target.value in ALLOWED[source.value])


def test_illegal_steps_through_the_api(rt: Runtime, tmp_path: Path) -> None:
    seed(rt, confirmed=3)
    campaign_id = new_campaign(rt, tmp_path)
    held = HeldQueue()
    with pytest.raises(IllegalTransition):
        pause(rt, campaign_id)  # a draft is not sending
    assert status_of(rt, campaign_id) == CampaignState.DRAFT

    queue, _ = inline(rt)
    assert start(rt, campaign_id, queue)
    assert status_of(rt, campaign_id) == CampaignState.SENT
    for step in (
        lambda: pause(rt, campaign_id),
        lambda: resume(rt, campaign_id, held),
        lambda: cancel(rt, campaign_id),
    ):
        with pytest.raises(IllegalTransition):
            step()
    assert status_of(rt, campaign_id) == CampaignState.SENT
    assert held.handed == []


@pytest.mark.parametrize("scheduled", [False, True], ids=["draft", "scheduled"])
def test_resume_is_only_for_paused_or_failed_campaigns(
    rt: Runtime, tmp_path: Path, scheduled: bool
) -> None:
    """Resuming a campaign that never started must not skip `start` (which fills the
    ledger): it would end "sent" to nobody, and the post could never be sent again."""
    audience = seed(rt, confirmed=3)
    campaign_id = new_campaign(rt, tmp_path)
    held = HeldQueue()
    if scheduled:
        assert start(rt, campaign_id, held, at=utcnow() + dt.timedelta(days=1))
    before = status_of(rt, campaign_id)
    with pytest.raises(IllegalTransition):
        resume(rt, campaign_id, held)
    assert status_of(rt, campaign_id) == before
    queue, _ = inline(rt)
    assert start(rt, campaign_id, queue)
    assert recipients_in_outbox(rt) == sorted(audience.eligible)


def test_pause_holds_the_queue_and_resume_sends_only_what_is_left(
    rt: Runtime, tmp_path: Path
) -> None:
    audience = seed(rt, confirmed=20)
    campaign_id = new_campaign(rt, tmp_path)
    held = HeldQueue()
    assert start(rt, campaign_id, held)
    assert held.handed == [(campaign_id, [0, 1, 2])]
    queue, _ = inline(rt)
    queue.enqueue(campaign_id, [0])
    assert len(outbox(rt)) == BATCH

    pause(rt, campaign_id)
    assert status_of(rt, campaign_id) == CampaignState.PAUSED
    # The broker still hands out the other batches: while paused they send nothing.
    queue.enqueue(campaign_id, [0, 1, 2])
    assert len(outbox(rt)) == BATCH
    p = progress(rt, campaign_id)
    assert (p.status, p.sent, p.queued, p.sending) == ("paused", BATCH, 20 - BATCH, 0)

    resumed = HeldQueue()
    assert resume(rt, campaign_id, resumed) == 0  # no row was in flight
    assert resumed.handed == [(campaign_id, [1, 2])]  # not the batch already sent
    assert status_of(rt, campaign_id) == CampaignState.SENDING
    for campaign, batches in resumed.handed:
        queue.enqueue(campaign, batches)
    queue.enqueue(campaign_id, [0, 1, 2])  # a late duplicate hand-over changes nothing

    assert status_of(rt, campaign_id) == CampaignState.SENT
    assert recipients_in_outbox(rt) == sorted(audience.eligible)
    assert all(row.attempts == 1 for row in ledger(rt, campaign_id))


def test_cancel_stops_a_campaign_for_good(rt: Runtime, tmp_path: Path) -> None:
    seed(rt, confirmed=10)
    campaign_id = new_campaign(rt, tmp_path)
    held = HeldQueue()
    assert start(rt, campaign_id, held)
    cancel(rt, campaign_id)
    assert status_of(rt, campaign_id) == CampaignState.CANCELLED

    queue, _ = inline(rt)
    for campaign, batches in held.handed:
        queue.enqueue(campaign, batches)
    assert outbox(rt) == {}
    assert start(rt, campaign_id, queue) is False
    with pytest.raises(IllegalTransition):
        resume(rt, campaign_id, queue)
    assert outbox(rt) == {}
    p = progress(rt, campaign_id)
    assert (p.status, p.sent, p.queued) == ("cancelled", 0, 10)
    assert p.finished_at is not None


def test_cancel_a_draft_and_a_scheduled_campaign(rt: Runtime, tmp_path: Path) -> None:
    seed(rt, confirmed=2)
    campaign_id = new_campaign(rt, tmp_path)
    held = HeldQueue()
    assert start(rt, campaign_id, held, at=utcnow() + dt.timedelta(days=1))
    cancel(rt, campaign_id)
    assert status_of(rt, campaign_id) == CampaignState.CANCELLED
    with rt.sessions.begin() as session:
        session.execute(
            update(Campaign)
            .where(Campaign.id == campaign_id)
            .values(scheduled_at=utcnow() - dt.timedelta(minutes=1))
        )
    assert start_due(rt, held) == []
    assert held.handed == [] and ledger(rt, campaign_id) == []


def test_scheduled_campaign_starts_when_due(rt: Runtime, tmp_path: Path) -> None:
    audience = seed(rt, confirmed=10)
    campaign_id = new_campaign(rt, tmp_path)
    queue, _ = inline(rt)
    at = utcnow() + dt.timedelta(hours=3)
    assert start(rt, campaign_id, queue, at=at) is True
    with rt.sessions() as session:
        campaign = session.get(Campaign, campaign_id)
        assert campaign is not None
        assert campaign.status == CampaignState.SCHEDULED
        assert campaign.scheduled_at == at and campaign.started_at is None
    assert ledger(rt, campaign_id) == [] and outbox(rt) == {}

    assert start_due(rt, queue) == []  # not yet
    assert outbox(rt) == {}

    with rt.sessions.begin() as session:
        session.execute(
            update(Campaign)
            .where(Campaign.id == campaign_id)
            .values(scheduled_at=utcnow() - dt.timedelta(seconds=5))
        )
    assert start_due(rt, queue) == [campaign_id]
    assert status_of(rt, campaign_id) == CampaignState.SENT
    assert recipients_in_outbox(rt) == sorted(audience.eligible)
    assert start_due(rt, queue) == []  # a second tick starts nothing
    assert len(outbox(rt)) == len(audience.eligible)


# ---------------------------------------------------------------- backend errors


class Recorder:
    """A backend that writes to a real outbox and remembers every envelope it was given."""

    name = "recorder"

    def __init__(self, folder: Path) -> None:
        self.outbox = OutboxBackend(folder)
        self.delivered: list[str] = []
        self.calls = 0

    def deliver(self, batch: Batch) -> list[Outcome]:
        self.delivered.extend(e.email for e in batch.envelopes)
        return self.outbox.send(batch)

    def send(self, batch: Batch) -> list[Outcome]:
        self.calls += 1
        return self.deliver(batch)


class Flaky(Recorder):
    def __init__(self, folder: Path, failures: int, retry_after: float | None) -> None:
        super().__init__(folder)
        self.failures = failures
        self.retry_after = retry_after

    def send(self, batch: Batch) -> list[Outcome]:
        self.calls += 1
        if self.failures:
            self.failures -= 1
            raise TransientDeliveryError("429 too many requests", retry_after=self.retry_after)
        return self.deliver(batch)


class Refusing(Recorder):
    def send(self, batch: Batch) -> list[Outcome]:
        self.calls += 1
        raise PermanentDeliveryError("SendGrid answered 400: the from address is not verified")


class Silent(Recorder):
    def send(self, batch: Batch) -> list[Outcome]:
        self.calls += 1
        raise UncertainDeliveryError("SendGrid did not answer in time: read timed out")


class StopsEarly(Recorder):
    """Delivers only the first ``take`` envelopes of each batch, then stops."""

    def __init__(self, folder: Path, take: int) -> None:
        super().__init__(folder)
        self.take = take

    def send(self, batch: Batch) -> list[Outcome]:
        self.calls += 1
        return self.deliver(dataclasses.replace(batch, envelopes=batch.envelopes[: self.take]))


def test_transient_errors_retry_honouring_retry_after(rt: Runtime, tmp_path: Path) -> None:
    audience = seed(rt, confirmed=20)
    campaign_id = new_campaign(rt, tmp_path)
    backend = Flaky(rt.settings.outbox_dir, failures=3, retry_after=30.0)
    rt.backend = backend
    queue, sleeps = inline(rt)
    assert start(rt, campaign_id, queue)

    assert status_of(rt, campaign_id) == CampaignState.SENT
    # The first three requests are refused; the batches after them do not wait for their
    # retries, and one pause (as long as the provider asked, more than the backoff) serves all.
    assert sleeps == [30.0]
    assert sorted(backend.delivered) == sorted(audience.eligible)  # no duplicates
    assert recipients_in_outbox(rt) == sorted(audience.eligible)
    # Rows put back after a refused request are claimed again: one attempt per request.
    assert sorted(row.attempts for row in ledger(rt, campaign_id))[-1] == 2


def test_transient_backoff_grows_and_never_undercuts_retry_after(
    rt: Runtime, tmp_path: Path
) -> None:
    audience = seed(rt, confirmed=5)
    campaign_id = new_campaign(rt, tmp_path)
    backend = Flaky(rt.settings.outbox_dir, failures=5, retry_after=0.5)
    rt.backend = backend
    queue, sleeps = inline(rt)
    assert start(rt, campaign_id, queue)

    assert status_of(rt, campaign_id) == CampaignState.SENT
    assert len(sleeps) == 5
    base = getattr(rt.settings, "retry_base_seconds", 2.0)
    for attempt, delay in enumerate(sleeps):
        assert delay >= 0.5
        assert base * 2**attempt * 0.5 <= delay <= base * 2**attempt * 1.5  # exponential, jitter
    assert sleeps[2] > sleeps[0] and sleeps[4] > sleeps[2]
    assert sorted(backend.delivered) == sorted(audience.eligible)


def test_out_of_retries_pauses_the_campaign_with_rows_still_queued(
    rt: Runtime, tmp_path: Path
) -> None:
    seed(rt, confirmed=10)
    rt = configure(rt, max_retries=2)
    campaign_id = new_campaign(rt, tmp_path)
    rt.backend = Flaky(rt.settings.outbox_dir, failures=10**6, retry_after=None)
    queue, sleeps = inline(rt)
    assert start(rt, campaign_id, queue)

    assert len(sleeps) == 2
    p = progress(rt, campaign_id)
    assert (p.status, p.queued, p.sent, p.sending) == ("paused", 10, 0, 0)
    assert "gave up after retries" in p.last_error and "429" in p.last_error

    # The operator resumes once the provider is back: the rows go out, once.
    rt.backend = Recorder(rt.settings.outbox_dir)
    assert resume(rt, campaign_id, queue) == 0
    assert progress(rt, campaign_id).sent == 10
    assert len(rt.backend.delivered) == 10
    rt.engine.dispose()


def test_permanent_errors_fail_rows_and_pause_the_campaign(rt: Runtime, tmp_path: Path) -> None:
    seed(rt, confirmed=20)
    rt = configure(rt, max_batch_errors=2)
    campaign_id = new_campaign(rt, tmp_path)
    backend = Refusing(rt.settings.outbox_dir)
    rt.backend = backend
    queue, sleeps = inline(rt)
    assert start(rt, campaign_id, queue)

    assert sleeps == []  # permanent: never retried
    assert backend.calls == 2  # the third batch waits: the campaign is paused
    rows = ledger(rt, campaign_id)
    failed = [row for row in rows if row.status == DeliveryState.FAILED]
    assert {row.batch for row in failed} == {0, 1} and len(failed) == 2 * BATCH
    assert all("the from address is not verified" in row.error for row in failed)
    assert all(row.status == DeliveryState.QUEUED for row in rows if row.batch == 2)
    with rt.sessions() as session:
        campaign = session.get(Campaign, campaign_id)
        assert campaign is not None
        assert campaign.status == CampaignState.PAUSED and campaign.errors == 2
        assert "the from address is not verified" in campaign.last_error
    p = progress(rt, campaign_id)
    assert (p.failed, p.queued, p.sent) == (14, 6, 0)
    assert outbox(rt) == {}
    rt.engine.dispose()


def test_one_permanent_error_below_the_limit_does_not_pause(rt: Runtime, tmp_path: Path) -> None:
    audience = seed(rt, confirmed=20)
    campaign_id = new_campaign(rt, tmp_path)

    class RefusesBatchOne(Recorder):
        def send(self, batch: Batch) -> list[Outcome]:
            self.calls += 1
            if self.calls == 2:
                raise PermanentDeliveryError("SendGrid answered 413: payload too large")
            return self.deliver(batch)

    backend = RefusesBatchOne(rt.settings.outbox_dir)
    rt.backend = backend
    queue, _ = inline(rt)
    assert start(rt, campaign_id, queue)
    p = progress(rt, campaign_id)
    assert (p.status, p.sent, p.failed, p.queued) == ("sent", 13, 7, 0)
    assert len(backend.delivered) == 13 and len(set(backend.delivered)) == 13
    assert set(backend.delivered) < set(audience.eligible)


def test_uncertain_errors_make_rows_unknown_never_resent(rt: Runtime, tmp_path: Path) -> None:
    seed(rt, confirmed=10)
    campaign_id = new_campaign(rt, tmp_path)
    backend = Silent(rt.settings.outbox_dir)
    rt.backend = backend
    queue, sleeps = inline(rt)
    assert start(rt, campaign_id, queue)

    assert sleeps == [] and backend.calls == 2
    rows = ledger(rt, campaign_id)
    assert all(row.status == DeliveryState.UNKNOWN for row in rows)
    assert all("did not answer in time" in row.error for row in rows)
    p = progress(rt, campaign_id)
    assert (p.status, p.unknown, p.sent, p.queued) == ("unsettled", 10, 0, 0)
    # Handing the batches over again (a redelivered task) sends nothing.
    queue.enqueue(campaign_id, [0, 1])
    assert backend.calls == 2


def test_backend_that_stops_early_has_the_rest_requeued_and_sent(
    rt: Runtime, tmp_path: Path
) -> None:
    audience = seed(rt, confirmed=20)
    campaign_id = new_campaign(rt, tmp_path)
    backend = StopsEarly(rt.settings.outbox_dir, take=3)
    rt.backend = backend
    assert start(rt, campaign_id, HeldQueue())

    first = send_batch(rt, campaign_id, 0)
    assert (first.sent, first.requeued) == (3, BATCH - 3)
    rows = [row for row in ledger(rt, campaign_id) if row.batch == 0]
    assert sorted(row.status for row in rows) == ["queued"] * 4 + ["sent"] * 3
    assert all(row.claimed_at is None for row in rows if row.status == "queued")

    queue, _ = inline(rt)
    sent_at_each_pause: list[int] = []
    queue.sleep = lambda seconds: sent_at_each_pause.append(len(backend.delivered))
    queue.enqueue(campaign_id, [0, 1, 2])
    assert status_of(rt, campaign_id) == CampaignState.SENT
    assert sorted(backend.delivered) == sorted(audience.eligible)  # each exactly once
    assert recipients_in_outbox(rt) == sorted(audience.eligible)
    # Each round sends three of every batch before one pause: the batches after a partial
    # one never wait for its retries.
    assert len(sent_at_each_pause) == 2 and sent_at_each_pause[0] == 3 + 3 * 3


# ---------------------------------------------------------------- dead workers and stalls


def _strand(rt: Runtime, campaign_id: int, batch: int, age: dt.timedelta) -> list[int]:
    """Leave a batch as a worker that died mid-request would: claimed, no outcome."""
    with rt.sessions.begin() as session:
        ids = list(
            session.scalars(
                update(Delivery)
                .where(Delivery.campaign_id == campaign_id, Delivery.batch == batch)
                .values(status=DeliveryState.SENDING, claimed_at=utcnow() - age, attempts=1)
                .returning(Delivery.id)
            )
        )
    return ids


def test_stranded_rows_become_unknown_and_are_not_resent(rt: Runtime, tmp_path: Path) -> None:
    audience = seed(rt, confirmed=20)
    campaign_id = new_campaign(rt, tmp_path)
    assert start(rt, campaign_id, HeldQueue())
    stranded = _strand(rt, campaign_id, 0, dt.timedelta(hours=2))
    fresh = _strand(rt, campaign_id, 1, dt.timedelta(seconds=10))  # a live worker's claim

    assert rt.settings.unknown_policy == "reconcile"
    assert settle(rt, resend=False, unknown_window=HOUR).batches == {}
    rows = {row.id: row for row in ledger(rt, campaign_id)}
    assert all(rows[i].status == DeliveryState.UNKNOWN for i in stranded)
    assert all("worker stopped" in rows[i].error for i in stranded)
    assert all(rows[i].status == DeliveryState.SENDING for i in fresh)

    # The live worker's batch and the untouched one go out; the unknown rows never do.
    queue, _ = inline(rt)
    with rt.sessions.begin() as session:
        session.execute(
            update(Delivery)
            .where(Delivery.id.in_(fresh))
            .values(status=DeliveryState.QUEUED, claimed_at=None)
        )
    queue.enqueue(campaign_id, [0, 1, 2])
    p = progress(rt, campaign_id)
    assert (p.status, p.unknown, p.sent, p.queued, p.sending) == ("unsettled", 7, 13, 0, 0)
    unknown_ids = {row.subscriber_id for row in ledger(rt, campaign_id) if row.batch == 0}
    expected = sorted(e for e, sid in audience.eligible.items() if sid not in unknown_ids)
    assert recipients_in_outbox(rt) == expected


def test_sweep_under_resend_policy_sends_stranded_rows_again_past_the_window(
    rt: Runtime, tmp_path: Path
) -> None:
    audience = seed(rt, confirmed=20)
    rt = configure(rt, unknown_policy="resend")
    campaign_id = new_campaign(rt, tmp_path)
    assert start(rt, campaign_id, HeldQueue())
    queue, _ = inline(rt)
    queue.enqueue(campaign_id, [1, 2])
    stranded = _strand(rt, campaign_id, 0, dt.timedelta(hours=2))
    assert len(stranded) == BATCH

    held = HeldQueue()
    sweep(rt, held, lost_after=HOUR, unknown_window=HOUR)  # two hours without an event
    assert held.handed == [(campaign_id, [0])]
    rows = {row.id: row for row in ledger(rt, campaign_id)}
    assert all(rows[i].status == DeliveryState.QUEUED for i in stranded)

    for campaign, batches in held.handed:
        queue.enqueue(campaign, batches)
    p = progress(rt, campaign_id)
    assert (p.status, p.sent, p.unknown, p.queued) == ("sent", 20, 0, 0)
    assert recipients_in_outbox(rt) == sorted(audience.eligible)
    rt.engine.dispose()


def test_sweep_under_reconcile_settles_and_finishes_without_resending(
    rt: Runtime, tmp_path: Path
) -> None:
    seed(rt, confirmed=7)
    campaign_id = new_campaign(rt, tmp_path)
    assert start(rt, campaign_id, HeldQueue())
    _strand(rt, campaign_id, 0, dt.timedelta(hours=2))
    queue, _ = inline(rt)
    sweep(rt, queue, lost_after=HOUR, unknown_window=HOUR)
    p = progress(rt, campaign_id)
    assert (p.status, p.unknown, p.sent, p.sending) == ("unsettled", 7, 0, 0)
    assert outbox(rt) == {}


def test_sweep_hands_over_again_the_batches_the_broker_lost(rt: Runtime, tmp_path: Path) -> None:
    audience = seed(rt, confirmed=20)
    campaign_id = new_campaign(rt, tmp_path)
    assert start(rt, campaign_id, HeldQueue())  # the broker lost every task
    queue, _ = inline(rt)
    queue.enqueue(campaign_id, [1])

    held = HeldQueue()
    sweep(rt, held, lost_after=dt.timedelta(minutes=10), unknown_window=HOUR)
    assert held.handed == []  # handed over just now: waiting their turn

    with rt.sessions.begin() as session:
        session.execute(
            update(Handover)
            .where(Handover.campaign_id == campaign_id)
            .values(handed_at=utcnow() - HOUR)
        )
    sweep(rt, held, lost_after=dt.timedelta(minutes=10), unknown_window=HOUR)
    assert held.handed == [(campaign_id, [0, 2])]  # only the batches with queued rows
    for campaign, batches in held.handed:
        queue.enqueue(campaign, batches)
    assert status_of(rt, campaign_id) == CampaignState.SENT
    assert recipients_in_outbox(rt) == sorted(audience.eligible)

    again = HeldQueue()
    sweep(rt, again, lost_after=dt.timedelta(0), unknown_window=HOUR)
    assert again.handed == []  # a sent campaign is left alone


def test_progress_counts_every_state(rt: Runtime, tmp_path: Path) -> None:
    audience = seed(rt, confirmed=20)
    campaign_id = new_campaign(rt, tmp_path)
    assert start(rt, campaign_id, HeldQueue())
    p = progress(rt, campaign_id)
    assert (p.status, p.recipients, p.queued, p.done) == ("sending", 20, 20, 0)

    with rt.sessions.begin() as session:
        subscriber = session.get(Subscriber, audience.eligible["reader00@example.org"])
        assert subscriber is not None
        store.unsubscribe(session, subscriber, how="test")
    queue, _ = inline(rt)
    queue.enqueue(campaign_id, [0])  # 6 sent, 1 skipped
    rt.backend = Silent(rt.settings.outbox_dir)
    queue.enqueue(campaign_id, [1])  # 7 unknown
    _strand(rt, campaign_id, 2, dt.timedelta(seconds=1))  # 6 in flight

    p = progress(rt, campaign_id)
    assert (p.sent, p.skipped, p.unknown, p.sending, p.queued, p.failed) == (6, 1, 7, 6, 0, 0)
    assert p.done == 14 and p.recipients == 20 and p.status == "sending"


def test_a_draft_never_started_takes_the_post_as_it_is_now(rt: Runtime, tmp_path: Path) -> None:
    path = post_file(tmp_path)
    campaign, _ = create_campaign(rt, edition_from(rt, path), path)  # then the send stopped
    path.write_text(POST.replace("The pipeline weekly", "A rewritten title"), "utf-8")
    again, new = create_campaign(rt, edition_from(rt, path), path)
    assert not new and again.id == campaign.id
    with rt.sessions() as session:
        stored = session.get(Campaign, campaign.id)
        assert stored is not None and stored.frozen_edition().subject == "A rewritten title"
