"""The ledger is filled a chunk at a time, the first ones small, and the campaign ends with
its last open batch, whatever order its batches are sent in."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import event, select

from mailer.config import Settings
from mailer.content.post import load_post
from mailer.content.render import Renderer
from mailer.runtime import Runtime
from mailer.sending.batch import send_batch
from mailer.sending.dispatch import FIRST_CHUNK_BATCHES, create_campaign, progress, start
from mailer.store.ledger import Campaign, CampaignState, Delivery
from subscribers import store
from subscribers.models import Status, Subscriber

BATCH = 2
READERS = 4 * FIRST_CHUNK_BATCHES * BATCH + 1  # chunks of 4, 4 and 8 batches, and one of 1


class HeldQueue:
    """A queue that only remembers what it was handed (a broker nobody consumes yet)."""

    def __init__(self) -> None:
        self.handed: list[list[int]] = []

    def enqueue(self, campaign_id: int, batches: Iterable[int]) -> None:
        self.handed.append(list(batches))


@pytest.fixture
def rt(settings: Settings, database_url: str, tmp_path: Path) -> Iterator[Runtime]:
    changes = {"database_url": database_url, "outbox_dir": tmp_path / "out", "batch_size": BATCH}
    runtime = Runtime(settings.model_copy(update=changes))
    consent = store.Consent(source="test", text="test consent")
    with runtime.sessions.begin() as session:
        for i in range(READERS):
            store.add(session, f"reader{i:02d}@example.org", consent, status=Status.CONFIRMED)
    yield runtime
    runtime.close()


def started(rt: Runtime, tmp_path: Path) -> tuple[int, HeldQueue]:
    post = tmp_path / "post.md"
    post.write_text("---\ntitle: Chunks\n---\nA paragraph.\n", "utf-8")
    campaign, _ = create_campaign(rt, Renderer(rt.settings).render(load_post(post)), post)
    queue = HeldQueue()
    assert start(rt, campaign.id, queue)
    return campaign.id, queue


def test_every_reader_is_queued_chunk_after_chunk(rt: Runtime, tmp_path: Path) -> None:
    campaign_id, queue = started(rt, tmp_path)
    first = FIRST_CHUNK_BATCHES
    assert [len(chunk) for chunk in queue.handed] == [first, first, 2 * first, 1]
    assert progress(rt, campaign_id).queued == READERS


def test_the_campaign_ends_with_its_last_open_batch_in_any_order(
    rt: Runtime, tmp_path: Path
) -> None:
    campaign_id, queue = started(rt, tmp_path)
    batches = [batch for chunk in queue.handed for batch in chunk]
    for batch in reversed(batches[1:]):  # the last first: the first batch is still open
        send_batch(rt, campaign_id, batch)
        assert progress(rt, campaign_id).status == CampaignState.SENDING
    send_batch(rt, campaign_id, batches[0])
    state = progress(rt, campaign_id)
    assert (state.status, state.sent) == (CampaignState.SENT, READERS)
    with rt.sessions() as session:
        campaign = session.get(Campaign, campaign_id)
        assert campaign is not None and campaign.filled


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_two_last_batches_recording_at_once_end_the_campaign(rt: Runtime, tmp_path: Path) -> None:
    """Each asks "is a later batch open?" while the other is between its outcomes and its
    question; the later one asks and tries to finish first. Asked before their commits,
    each saw the other's rows open and the campaign stayed `sending` with every row sent."""
    campaign_id, queue = started(rt, tmp_path)
    batches = [batch for chunk in queue.handed for batch in chunk]
    for batch in batches[:-2]:
        send_batch(rt, campaign_id, batch)
    before_last, last = batches[-2:]
    both_asked, last_done = threading.Barrier(2), threading.Event()
    asked: set[int] = set()

    def hold(conn, cursor, statement: str, parameters, context, executemany) -> None:
        if "SELECT EXISTS (SELECT 1 FROM deliveries" in statement:
            if threading.get_ident() in asked:
                return
            asked.add(threading.get_ident())
            both_asked.wait(10)
            if parameters["batch"] == before_last:
                last_done.wait(10)

    def send(batch: int) -> None:
        send_batch(rt, campaign_id, batch)
        if batch == last:
            last_done.set()

    event.listen(rt.engine, "after_cursor_execute", hold)
    try:
        threads = [threading.Thread(target=send, args=(b,)) for b in (before_last, last)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        event.remove(rt.engine, "after_cursor_execute", hold)
    state = progress(rt, campaign_id)
    assert (state.status, state.sent) == (CampaignState.SENT, READERS)


def test_a_chunk_after_readers_of_the_last_batch_were_erased_takes_new_batches(
    rt: Runtime, tmp_path: Path
) -> None:
    """Batch numbers come from the campaign, not from the ledger's highest batch: with the
    first chunk's last batch erased (GDPR) before the next chunk, the next chunk's readers
    must not join that batch, handed over already (its task may be done)."""

    class ErasingQueue(HeldQueue):
        def enqueue(self, campaign_id: int, batches: Iterable[int]) -> None:
            super().enqueue(campaign_id, batches)
            if len(self.handed) == 1:
                last = self.handed[0][-1]
                with rt.sessions.begin() as session:
                    for row in ledger_rows(rt, campaign_id):
                        if row.batch == last:
                            subscriber = session.get(Subscriber, row.subscriber_id)
                            assert subscriber is not None
                            assert store.erase(session, subscriber.email)

    post = tmp_path / "post.md"
    post.write_text("---\ntitle: Chunks\n---\nA paragraph.\n", "utf-8")
    campaign, _ = create_campaign(rt, Renderer(rt.settings).render(load_post(post)), post)
    queue = ErasingQueue()
    assert start(rt, campaign.id, queue)
    first = set(queue.handed[0])
    in_first = [row for row in ledger_rows(rt, campaign.id) if row.batch in first]
    assert len(in_first) == (FIRST_CHUNK_BATCHES - 1) * BATCH  # the erased batch stays empty
    handed = [batch for chunk in queue.handed for batch in chunk]
    assert len(handed) == len(set(handed))
    assert {row.batch for row in ledger_rows(rt, campaign.id)} <= set(handed)


def ledger_rows(rt: Runtime, campaign_id: int) -> list[Delivery]:
    with rt.sessions() as session:
        return list(session.scalars(select(Delivery).where(Delivery.campaign_id == campaign_id)))
