"""The Friday send: beat's crontab, and the scheduled posts started once, under a frozen clock."""

from __future__ import annotations

import datetime as dt
import importlib
import logging
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from zoneinfo import ZoneInfo

import pytest
import time_machine
from celery import Celery
from celery.beat import ScheduleEntry
from sqlalchemy import select

from mailer.config import Settings, load_settings
from mailer.runtime import Runtime
from mailer.sending.dispatch import InlineQueue
from mailer.sending.schedule import due_posts, send_scheduled_posts
from mailer.store.ledger import Campaign, Delivery
from subscribers import store
from subscribers.models import Status

SHANGHAI = ZoneInfo("Asia/Shanghai")
FRIDAY = dt.date(2026, 2, 6)
FRIDAY_9AM = dt.datetime(2026, 2, 6, 9, 0, 20, tzinfo=SHANGHAI)
READERS = 9

FRIDAY_POST = """---
title: Friday edition
scheduled: 2026-02-06
---
The post that goes out this Friday.
"""
NEXT_POST = """---
title: Next week's edition
scheduled: 2026-02-13
---
The post that waits for next Friday.
"""
THURSDAY_POST = """---
title: A Thursday post
scheduled: 2026-02-05
---
Scheduled on another day of this week.
"""
BROKEN_POST = "---\ntitle: broken\ntags: [a\n---\nBody\n"


# ---------------------------------------------------------------- (a) the crontab entry


@pytest.fixture
def worker() -> ModuleType:
    """worker.py, imported once (it reads the settings at import: here, the defaults)."""
    module = sys.modules.get("worker") or importlib.import_module("worker")
    assert module.settings.broker_url == ""  # the defaults: no developer variable leaked in
    return module


def _send_entry(worker: ModuleType, settings: Settings) -> ScheduleEntry:
    """Beat's entry for the Friday send as ``worker`` builds it from ``settings``, in an app
    configured as worker.py configures its own (the send timezone as the app's)."""
    beat = worker._schedule(settings)["send-scheduled-posts"]
    assert beat["task"] == "mailer.send_scheduled_posts"
    assert beat["task"] in worker.app.tasks
    app = Celery("schedule-test", set_as_current=False)
    app.conf.timezone = settings.send_timezone
    return ScheduleEntry(name="send", task=beat["task"], schedule=beat["schedule"], app=app)


def _due(entry: ScheduleEntry, now: dt.datetime, last_run: dt.datetime) -> bool:
    with time_machine.travel(now, tick=False):
        return entry.schedule.is_due(last_run).is_due


def test_the_worker_app_runs_beat_in_the_send_timezone(worker: ModuleType) -> None:
    assert worker.app.conf.timezone == worker.settings.send_timezone == "Asia/Shanghai"
    assert set(worker.app.conf.beat_schedule) == set(worker._schedule(worker.settings))
    for entry in worker.app.conf.beat_schedule.values():
        assert entry["task"] in worker.app.tasks


def test_the_crontab_is_due_on_friday_at_nine_in_shanghai(worker: ModuleType) -> None:
    settings = Settings(send_weekday="fri", send_time="09:00", send_timezone="Asia/Shanghai")
    entry = _send_entry(worker, settings)
    a_week_before = dt.datetime(2026, 1, 30, 9, 0, tzinfo=SHANGHAI)

    assert _due(entry, FRIDAY_9AM, a_week_before)
    # The same moment seen from UTC (Friday 01:00): still due.
    assert _due(entry, FRIDAY_9AM.astimezone(dt.UTC), a_week_before)
    assert not _due(entry, dt.datetime(2026, 2, 5, 9, 0, 20, tzinfo=SHANGHAI), a_week_before)
    assert not _due(entry, dt.datetime(2026, 2, 6, 8, 0, 20, tzinfo=SHANGHAI), a_week_before)
    # Once it has run this Friday, it is not due again that day (09:00 UTC is 17:00 there).
    ran_at_nine = dt.datetime(2026, 2, 6, 9, 0, 5, tzinfo=SHANGHAI)
    assert not _due(entry, dt.datetime(2026, 2, 6, 9, 1, 0, tzinfo=SHANGHAI), ran_at_nine)
    assert not _due(entry, dt.datetime(2026, 2, 6, 9, 0, 20, tzinfo=dt.UTC), ran_at_nine)
    # From Thursday 09:00 the next run is a day away; from Friday 08:00, an hour.
    with time_machine.travel(dt.datetime(2026, 2, 5, 9, 0, 0, tzinfo=SHANGHAI), tick=False):
        assert entry.schedule.remaining_estimate(a_week_before) == dt.timedelta(days=1)
    with time_machine.travel(dt.datetime(2026, 2, 6, 8, 0, 0, tzinfo=SHANGHAI), tick=False):
        assert entry.schedule.remaining_estimate(a_week_before) == dt.timedelta(hours=1)


def test_the_crontab_follows_the_settings(worker: ModuleType) -> None:
    paris = ZoneInfo("Europe/Paris")
    settings = Settings(send_weekday="mon", send_time="17:30", send_timezone="Europe/Paris")
    entry = _send_entry(worker, settings)
    last = dt.datetime(2026, 2, 2, 17, 30, tzinfo=paris) - dt.timedelta(days=7)
    assert _due(entry, dt.datetime(2026, 2, 2, 17, 30, 10, tzinfo=paris), last)
    assert not _due(entry, dt.datetime(2026, 2, 2, 17, 29, 0, tzinfo=paris), last)
    ran_monday = dt.datetime(2026, 2, 2, 17, 30, 1, tzinfo=paris)
    assert not _due(entry, dt.datetime(2026, 2, 6, 17, 30, 10, tzinfo=paris), ran_monday)
    # 17:30 in Shanghai is 10:30 in Paris: the zone is Paris's, not a default one.
    assert not _due(entry, dt.datetime(2026, 2, 2, 17, 30, 10, tzinfo=SHANGHAI), last)


def test_the_beat_tasks_publish_to_the_broker_the_worker_consumes(worker: ModuleType) -> None:
    """With no MAILER_BROKER_URL the worker listens on its default Redis; the batches its
    beat tasks hand over (start_due, sweep, the Friday send) must go there too."""
    assert worker.settings.broker_url == ""
    consumed = worker.app.connection_for_write().as_uri()
    published = worker.queue().app.connection_for_write().as_uri()
    assert published == consumed


# ---------------------------------------------------------------- (b) starting the posts


@pytest.fixture
def posts(tmp_path: Path) -> Path:
    folder = tmp_path / "posts"
    folder.mkdir()
    (folder / "2026-02-05-thursday.md").write_text(THURSDAY_POST, "utf-8")
    (folder / "2026-02-06-friday.md").write_text(FRIDAY_POST, "utf-8")
    (folder / "2026-02-13-next.md").write_text(NEXT_POST, "utf-8")
    (folder / "2026-02-06-broken.md").write_text(BROKEN_POST, "utf-8")
    return folder


@pytest.fixture
def schedule_settings(
    monkeypatch: pytest.MonkeyPatch, posts: Path, database_url: str, tmp_path: Path
) -> Settings:
    monkeypatch.setenv("MAILER_POSTS_DIR", str(posts))
    return load_settings(
        site_url="https://blog.example.org",
        public_url="https://mail.example.org",
        database_url=database_url,
        outbox_dir=tmp_path / "outbox",
        batch_size=4,
        send_weekday="fri",
        send_time="09:00",
        send_timezone="Asia/Shanghai",
    )


@pytest.fixture
def rt(schedule_settings: Settings) -> Iterator[Runtime]:
    runtime = Runtime(schedule_settings)
    consent = store.Consent(source="test", text="test")
    with runtime.sessions.begin() as session:
        for i in range(READERS):
            store.add(session, f"reader{i}@example.org", consent, status=Status.CONFIRMED)
        store.add(session, "pending@example.org", consent, status=Status.PENDING)
    yield runtime
    runtime.engine.dispose()


def _queue(rt: Runtime) -> InlineQueue:
    queue = InlineQueue(rt)
    queue.sleep = lambda seconds: None
    return queue


def _outbox(rt: Runtime) -> list[Path]:
    return sorted(rt.settings.outbox_dir.glob("*.eml"))


def _campaigns(rt: Runtime) -> list[tuple[str, str, int]]:
    with rt.sessions() as session:
        return [
            (c.slug, c.status, c.recipients)
            for c in session.scalars(select(Campaign).order_by(Campaign.id))
        ]


def _today() -> dt.date:
    return dt.datetime.now(SHANGHAI).date()


def test_due_posts_are_the_ones_scheduled_today(
    schedule_settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="mailer.sending.schedule"):
        due = due_posts(schedule_settings.posts_dir, FRIDAY)
    assert [post.slug for post in due] == ["2026-02-06-friday"]
    assert any("2026-02-06-broken.md" in r.getMessage() for r in caplog.records)
    assert [p.slug for p in due_posts(schedule_settings.posts_dir, dt.date(2026, 2, 13))] == [
        "2026-02-13-next"
    ]


def test_friday_tick_starts_only_the_friday_post_once(
    rt: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    with (
        time_machine.travel(FRIDAY_9AM, tick=False),
        caplog.at_level(logging.INFO, logger="mailer.sending.schedule"),
    ):
        assert _today() == FRIDAY
        started = send_scheduled_posts(rt, _queue(rt), _today())
    assert started == ["2026-02-06-friday"]
    assert _campaigns(rt) == [("2026-02-06-friday", "sent", READERS)]
    sent = _outbox(rt)
    assert len(sent) == READERS
    subjects = {path.read_bytes().split(b"\nSubject: ")[1].split(b"\r")[0] for path in sent}
    assert subjects == {b"Friday edition"}
    # The broken post was reported, not fatal.
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert any("2026-02-06-broken.md" in r.getMessage() for r in errors)

    # A repeated tick a minute later, then a second beat process with its own runtime.
    with time_machine.travel(FRIDAY_9AM + dt.timedelta(minutes=1), tick=False):
        assert send_scheduled_posts(rt, _queue(rt), _today()) == []
        other = Runtime(rt.settings)
        assert send_scheduled_posts(other, _queue(other), _today()) == []
        other.engine.dispose()
    assert _outbox(rt) == sent
    assert _campaigns(rt) == [("2026-02-06-friday", "sent", READERS)]
    with rt.sessions() as session:
        attempts = list(session.scalars(select(Delivery.attempts)))
    assert attempts == [1] * READERS


def test_no_post_on_a_friday_with_nothing_scheduled(rt: Runtime) -> None:
    with time_machine.travel(FRIDAY_9AM + dt.timedelta(days=14), tick=False):
        assert send_scheduled_posts(rt, _queue(rt), _today()) == []
    assert _campaigns(rt) == [] and _outbox(rt) == []


BEATS = 4
ROUNDS = 6


def test_beats_racing_at_the_same_moment_start_each_post_once(rt: Runtime, posts: Path) -> None:
    """Several beat processes tick at once (each its own engine), for a few Fridays' posts:
    exactly one of them starts each post, and every reader gets each post once."""
    slugs = ["2026-02-06-friday"]
    for round_ in range(ROUNDS):
        if round_:
            slug = f"2026-02-06-extra-{round_}"
            (posts / f"{slug}.md").write_text(
                FRIDAY_POST.replace("Friday edition", f"Extra {round_}"), "utf-8"
            )
            slugs.append(slug)
        runtimes = [Runtime(rt.settings) for _ in range(BEATS)]
        barrier = threading.Barrier(BEATS)
        results: list[list[str]] = []
        errors: list[BaseException] = []

        def beat(runtime: Runtime, barrier: threading.Barrier = barrier, results=results,
                 errors=errors) -> None:  # fmt: skip
            try:
                runtime.sessions  # connect and check the schema before the race  # noqa: B018
                barrier.wait()
                results.append(send_scheduled_posts(runtime, _queue(runtime), FRIDAY))
            except BaseException as exc:  # reported below
                errors.append(exc)

        with time_machine.travel(FRIDAY_9AM, tick=True):
            threads = [threading.Thread(target=beat, args=(r,)) for r in runtimes]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(60)
        for runtime in runtimes:
            runtime.engine.dispose()

        assert errors == []
        with rt.sessions() as session:
            attempts = list(session.scalars(select(Delivery.attempts)))
        assert attempts == [1] * READERS * len(slugs)  # nobody got anything twice
        assert len(_outbox(rt)) == READERS * len(slugs)
        assert [c[1:] for c in _campaigns(rt)] == [("sent", READERS)] * len(slugs)
        started = sorted(slug for result in results for slug in result)
        assert started == [slugs[-1]], f"round {round_}: {results}"


def test_the_worker_task_uses_today_in_the_send_timezone(
    rt: Runtime, monkeypatch: pytest.MonkeyPatch, worker: ModuleType
) -> None:
    """At 07:00 on Friday in Shanghai it is still Thursday in UTC: Friday's post goes."""
    assert worker.settings.send_timezone == "Asia/Shanghai"
    monkeypatch.setattr(worker, "_runtime", rt)
    monkeypatch.setattr(worker, "_queue", _queue(rt))
    early = dt.datetime(2026, 2, 6, 7, 0, tzinfo=SHANGHAI)
    assert early.astimezone(dt.UTC).date() == dt.date(2026, 2, 5)
    with time_machine.travel(early, tick=False):
        assert worker.send_scheduled_posts() == ["2026-02-06-friday"]
        assert worker.send_scheduled_posts() == []
    assert len(_outbox(rt)) == READERS
