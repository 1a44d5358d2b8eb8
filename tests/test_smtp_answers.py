"""What a real SMTP server's answer about one reader does: to that reader, and to nobody else.

An aiosmtpd server on loopback answers chosen recipients from a script: 4xx ("later":
greylisting, a full mailbox) defers only that reader, 5.1.x ("no such user") takes the
address off the list, 5.7.x ("refused by policy") fails the message but keeps the reader.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from mailer.config import Settings
from mailer.content.post import load_post
from mailer.content.render import Renderer
from mailer.runtime import Runtime
from mailer.sending.dispatch import InlineQueue, create_campaign, progress, start
from mailer.store.ledger import Delivery, DeliveryState
from mailer.tracking.events import EventRecord
from subscribers import store
from subscribers.models import Status
from tests.test_smtp import deliveries, seed, smtp_settings, smtp_sink

READERS = [f"reader{i}@example.org" for i in range(5)]
FULL = "452 4.2.2 mailbox full"


class Answers:
    """Answers RCPT TO, MAIL FROM and DATA from a script per recipient (the last answer
    repeats; 250 for anyone else) and keeps whom each accepted message was for."""

    def __init__(self) -> None:
        self.mail: list[str] = ["250 OK"]
        self.rcpt: dict[str, list[str]] = {}
        self.data: dict[str, list[str]] = {}
        self.accepted: list[str] = []

    async def handle_MAIL(self, server, session, envelope, address, mail_options) -> str:
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return _next(self.mail)

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options) -> str:
        answer = _next(self.rcpt.get(address, ["250 OK"]))
        if answer.startswith("250"):
            envelope.rcpt_tos.append(address)
        return answer

    async def handle_DATA(self, server, session, envelope) -> str:
        (address,) = envelope.rcpt_tos  # one reader per message
        answer = _next(self.data.get(address, ["250 OK"]))
        if answer.startswith("250"):
            self.accepted.append(address)
        return answer


def _next(script: list[str]) -> str:
    return script.pop(0) if len(script) > 1 else script[0]


@pytest.fixture
def server() -> Iterator[tuple[Answers, int]]:
    handler = Answers()
    with smtp_sink(handler) as port:
        yield handler, port


@pytest.fixture
def make_rt(
    settings: Settings, database_url: str, server: tuple[Answers, int]
) -> Iterator[Callable[..., Runtime]]:
    made: list[Runtime] = []

    def make(**extra: object) -> Runtime:
        made.append(Runtime(smtp_settings(settings, database_url, server[1], 8000, **extra)))
        return made[-1]

    yield make
    for rt in made:
        rt.engine.dispose()


def _no_wait(_seconds: float) -> None:
    pass


def send(
    rt: Runtime, tmp_path: Path, slug: str = "answers", sleep: Callable[[float], None] = _no_wait
) -> int:
    path = tmp_path / f"{slug}.md"
    path.write_text(f"---\ntitle: {slug}\n---\nHello.\n", "utf-8")
    campaign, _ = create_campaign(rt, Renderer(rt.settings).render(load_post(path)), path)
    queue = InlineQueue(rt)
    queue.sleep = sleep
    assert start(rt, campaign.id, queue)
    return campaign.id


@pytest.mark.parametrize("stage", ["rcpt", "data"])
def test_a_reader_told_later_waits_alone_with_the_reason_then_gets_it_once(
    make_rt: Callable[..., Runtime], server: tuple[Answers, int], tmp_path: Path, stage: str
) -> None:
    handler, _ = server
    rt = make_rt()
    ids = seed(rt, READERS)
    getattr(handler, stage)[READERS[0]] = [FULL, "250 OK"]
    while_waiting = []

    def sleep(_seconds: float) -> None:
        with rt.sessions() as session:
            rows = session.scalars(
                select(Delivery).where(Delivery.subscriber_id == ids[READERS[0]])
            )
            while_waiting.append([(r.status, r.attempts, r.error) for r in rows])

    campaign_id = send(rt, tmp_path, sleep=sleep)

    assert while_waiting == [[(DeliveryState.QUEUED, 1, FULL)]]
    assert sorted(handler.accepted) == sorted(READERS)  # each exactly once
    rows = deliveries(rt, campaign_id)
    assert [rows[ids[a]].attempts for a in READERS] == [2, 1, 1, 1, 1]  # the rest went on
    assert rows[ids[READERS[0]]].status == DeliveryState.SENT
    assert progress(rt, campaign_id).status == "sent"


def test_a_reader_always_told_later_fails_alone_and_the_campaign_goes_on(
    make_rt: Callable[..., Runtime], server: tuple[Answers, int], tmp_path: Path
) -> None:
    handler, _ = server
    rt = make_rt(batch_size=2, max_retries=2)
    ids = seed(rt, READERS)
    handler.rcpt[READERS[0]] = [FULL]  # first in the first batch

    campaign_id = send(rt, tmp_path)

    assert sorted(handler.accepted) == sorted(READERS[1:])
    row = deliveries(rt, campaign_id)[ids[READERS[0]]]
    assert (row.status, row.attempts) == (DeliveryState.FAILED, 3)
    assert row.error == f"deferred at each of 3 tries: {FULL}"
    p = progress(rt, campaign_id)
    assert (p.status, p.sent, p.failed, p.queued) == ("sent", 4, 1, 0)
    with rt.sessions() as session:
        reader = store.find(session, READERS[0])
        assert (reader.status, reader.soft_bounces) == (Status.CONFIRMED, 1)  # a soft bounce


def test_a_server_that_keeps_saying_later_pauses_the_campaign_saying_why(
    make_rt: Callable[..., Runtime], server: tuple[Answers, int], tmp_path: Path
) -> None:
    handler, _ = server
    rt = make_rt(max_retries=1)
    seed(rt, READERS[:2])
    handler.mail = ["421 4.3.2 too busy, try later"]  # every message, whoever it is for

    campaign_id = send(rt, tmp_path)

    p = progress(rt, campaign_id)
    assert (p.status, p.queued, p.failed) == ("paused", 2, 0)
    assert p.last_error == "batch 0 gave up after retries: 421 4.3.2 too busy, try later"


def test_no_such_user_leaves_the_list_a_policy_refusal_does_not(
    make_rt: Callable[..., Runtime], server: tuple[Answers, int], tmp_path: Path
) -> None:
    handler, _ = server
    rt = make_rt()
    dead, blocked = READERS[0], READERS[1]
    ids = seed(rt, READERS)
    handler.rcpt[dead] = ["550 5.1.1 <reader0@example.org>: user unknown"]
    handler.data[blocked] = ["550 5.7.1 message refused by policy", "250 OK"]

    first = send(rt, tmp_path, "first")

    rows = deliveries(rt, first)
    assert rows[ids[dead]].status == rows[ids[blocked]].status == DeliveryState.FAILED
    assert rows[ids[dead]].error == "550 5.1.1 <reader0@example.org>: user unknown"
    assert rows[ids[blocked]].error == "refused by policy: 550 5.7.1 message refused by policy"
    with rt.sessions() as session:
        assert store.find(session, dead).status == Status.BOUNCED
        assert store.suppression_of(session, dead) is not None
        assert store.find(session, blocked).status == Status.CONFIRMED
        events = {e.delivery_id: e for e in session.scalars(select(EventRecord))}
    hard, block = events.pop(rows[ids[dead]].id), events.pop(rows[ids[blocked]].id)
    assert events == {}
    assert (hard.kind, hard.source) == (block.kind, block.source) == ("bounced", "smtp")
    assert hard.detail == {"reply": "550 5.1.1 <reader0@example.org>: user unknown"}
    assert block.detail == {"reply": "refused by policy: 550 5.7.1 message refused by policy"}

    second = send(rt, tmp_path, "second")
    assert ids[dead] not in deliveries(rt, second)
    assert deliveries(rt, second)[ids[blocked]].status == DeliveryState.SENT
    assert handler.accepted.count(blocked) == 1
