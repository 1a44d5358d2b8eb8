"""`mailer campaigns …` and `mailer send --at` as an operator runs them, on SQLite and
PostgreSQL. Sends go to this run's own Redis database with no worker listening, so a
campaign stays `sending` with its batch in the broker until the test steers it."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
import redis
from sqlalchemy import func, select
from sqlalchemy.orm import sessionmaker

from mailer.store.ledger import Campaign, Delivery
from subscribers import store
from subscribers.models import Status
from testkit.redis_db import redis_url
from tests.cli.conftest import Cli, cells, ok, refused

POST = "---\ntitle: Operator weekly\n---\nHello, with [a link](https://example.org/story).\n"
AUDIENCE = ["ann@example.org", "bob@example.org", "cy@example.org"]
CELERY_QUEUE = "celery"  # the Redis list Celery's default queue is kept in


@pytest.fixture
def post(sessions: sessionmaker, tmp_path: Path) -> str:
    """A post, three confirmed readers and one pending."""
    with sessions.begin() as session:
        for email in AUDIENCE:
            store.add(session, email, store.Consent("test", "yes"), status=Status.CONFIRMED)
        store.add(session, "pat@example.org", store.Consent("test", "yes"))
    (tmp_path / "post.md").write_text(POST, "utf-8")
    return "post.md"


def campaign(sessions: sessionmaker) -> tuple[str, dt.datetime | None, int] | None:
    """The only campaign's (status, scheduled_at, ledger rows), or None."""
    with sessions() as session:
        row = session.scalars(select(Campaign)).one_or_none()
        rows = session.scalar(select(func.count()).select_from(Delivery))
    return (row.status, row.scheduled_at, rows) if row is not None else None


def outbox() -> list[str]:
    return sorted(
        line.removeprefix("To: ")
        for path in Path("outbox").glob("*.eml")
        for line in path.read_text("utf-8").splitlines()
        if line.startswith("To: ")
    )


def test_pause_then_resume_sends_only_what_is_still_queued(
    cli: Cli, sessions: sessionmaker, post: str, broker: redis.Redis
) -> None:
    out = ok(cli("send", post, broker_url=redis_url()))
    assert "Campaign 1 (sending): 3 recipients" in out
    assert broker.llen(CELERY_QUEUE) == 1  # one batch, waiting for a worker
    assert cells(ok(cli("campaigns", "list")))[1][:4] == ["1", "post", "sending", "3"]

    assert "Campaign 1 paused." in ok(cli("campaigns", "pause", "1"))
    assert campaign(sessions) == ("paused", None, 3)
    shown = {row[0]: row[-1] for row in cells(ok(cli("campaigns", "show", "1")))}
    assert shown["status"] == "paused" and shown["queued"] == "3" and shown["sent"] == "0"

    # No broker now: resume sends inline, into the outbox.
    assert "Campaign 1 (sent): 3 recipients — sent 3" in ok(cli("campaigns", "resume", "1"))
    assert outbox() == AUDIENCE
    assert campaign(sessions) == ("sent", None, 3)

    refused(cli("campaigns", "resume", "1"), "campaign 1 is sent: only a paused")
    refused(cli("campaigns", "pause", "1"), "campaign 1 is sent: it cannot become paused")
    refused(cli("campaigns", "pause", "7"), "no campaign 7")
    assert outbox() == AUDIENCE


def test_cancel_asks_first_then_stops_the_campaign_for_good(
    cli: Cli, sessions: sessionmaker, post: str, broker: redis.Redis
) -> None:
    ok(cli("send", post, broker_url=redis_url()))
    declined = cli("campaigns", "cancel", "1", input="n\n")
    assert declined.exit_code == 1 and "Aborted" in declined.output
    assert campaign(sessions) == ("sending", None, 3)

    assert "Campaign 1 cancelled." in ok(cli("campaigns", "cancel", "1", "--yes"))
    assert campaign(sessions) == ("cancelled", None, 3)
    refused(cli("campaigns", "resume", "1"), "campaign 1 is cancelled")
    again = ok(cli("send", post))
    assert "has campaign 1 already (cancelled" in again and "--again" in again
    assert outbox() == []


@pytest.mark.parametrize(
    ("at", "utc"),
    [
        ("2099-12-04T09:00", dt.datetime(2099, 12, 4, 1, 0, tzinfo=dt.UTC)),  # Asia/Shanghai
        ("2099-12-04T09:00+02:00", dt.datetime(2099, 12, 4, 7, 0, tzinfo=dt.UTC)),
    ],
)
def test_send_at_schedules_the_campaign_and_queues_nothing(
    cli: Cli, sessions: sessionmaker, post: str, broker: redis.Redis, at: str, utc: dt.datetime
) -> None:
    out = ok(cli("send", post, "--at", at, broker_url=redis_url()))
    assert f"Campaign 1 is scheduled for {utc:%Y-%m-%d %H:%M} UTC." in out
    assert campaign(sessions) == ("scheduled", utc, 0)
    assert broker.llen(CELERY_QUEUE) == 0
    assert cells(ok(cli("campaigns", "list")))[1][:3] == ["1", "post", "scheduled"]


@pytest.mark.parametrize(
    ("at", "message"),
    [
        ("next friday", "--at 'next friday': use an ISO time such as 2026-12-04T09:00"),
        ("2020-12-04T09:00", "--at"),  # in the past
    ],
    ids=["unreadable", "past"],
)
def test_send_at_refuses_a_time_it_cannot_keep(
    cli: Cli, sessions: sessionmaker, post: str, broker: redis.Redis, at: str, message: str
) -> None:
    result = cli("send", post, "--at", at, broker_url=redis_url())
    refused(result, message)
    assert campaign(sessions) is None and broker.llen(CELERY_QUEUE) == 0
