"""The pixel and the click answered in front of the app, as a Starlette route would answer
them, and the flush that writes the event buffer in chunks."""

from __future__ import annotations

import datetime as dt
import gc
import logging
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, event, func, select, text
from sqlalchemy.orm import sessionmaker
from starlette.responses import RedirectResponse, Response

from mailer.clock import utcnow
from mailer.config import Settings
from mailer.runtime import Runtime
from mailer.store.db import make_engine
from mailer.tokens import Purpose, Signer
from mailer.tracking.events import Event, EventKind, EventRecord, _row
from mailer.web.guards import SECURITY_HEADERS
from mailer.web.tracking import CHUNK, HEADERS, PIXEL, EventBuffer
from tests.event_support import events_of, new_campaign, write_post
from tests.live_server import LiveServer, serve, server_factory

start_server = server_factory()
LINK = "https://example.org/story?id=1&from=mail"
BROWSER = {"accept": "text/html"}


def test_a_flush_writes_every_event_in_statements_of_a_chunk(sessions: sessionmaker) -> None:
    statements: list[int] = []

    def count(_conn: Any, _cursor: Any, _sql: str, params: Any, _ctx: Any, many: bool) -> None:
        statements.append(len(params) if many else 1)

    engine = sessions.kw["bind"]
    event.listen(engine, "before_cursor_execute", count)
    opened = Event(EventKind.OPENED, utcnow(), "tracking", campaign_id=1, delivery_id=1)
    buffer = EventBuffer(sessions)
    for _ in range(2 * CHUNK + 1):
        buffer.add(opened)
    assert buffer.flush() == 2 * CHUNK + 1
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(EventRecord)) == 2 * CHUNK + 1
    if engine.dialect.name == "sqlite":  # PostgreSQL's go by COPY, not through execute
        assert max(statements) == CHUNK


def test_the_tracking_routes_answer_with_the_security_headers(
    start_server: Callable[..., LiveServer],
) -> None:
    server = start_server()
    with httpx.Client(base_url=server.url, headers={"connection": "close"}) as client:
        answers = [client.get("/o/forged.1.x.gif"), client.get("/c/forged.1.x/0")]
        other_method = client.post("/o/forged.1.x.gif")
    for answer in answers:
        assert answer.status_code == 404 and "text/html" in answer.headers["content-type"]
        assert {name: answer.headers.get(name) for name in SECURITY_HEADERS} == SECURITY_HEADERS
    assert other_method.status_code in (404, 405)  # the app's own answer, not an error


def test_a_flush_writes_the_rows_a_core_insert_writes(sessions: sessionmaker) -> None:
    """The flush's own insert (the driver's executemany on SQLite, COPY on PostgreSQL) stores
    each value as SQLAlchemy's column types do: times, flags and JSON read back the same."""
    at = dt.datetime(2026, 2, 6, 9, 30, 1, 5, tzinfo=dt.timezone(dt.timedelta(hours=8)))
    events = [
        Event(EventKind.OPENED, at, "tracking", 1, 2, machine=True, raw={"user_agent": 'Ü "x"'}),
        Event(EventKind.CLICKED, at, "tracking", 1, 2, position=3, raw={"url": "https://e.org/?a"}),
        Event(EventKind.BOUNCED, at.replace(microsecond=0), "tracking"),
    ]
    with sessions.begin() as session:
        session.execute(EventRecord.__table__.insert(), [_row(e) for e in events])
    buffer = EventBuffer(sessions)
    for one in events:
        buffer.add(one)
    assert buffer.flush() == len(events)
    columns = [c for c in EventRecord.__table__.c if c.name != "id"]
    with sessions() as session:
        stored = [tuple(row) for row in session.execute(select(*columns).order_by("id"))]
        # and as the database holds them (SQLite: text), for SQL that compares them
        raw = session.execute(text("SELECT kind, at, machine, detail FROM events ORDER BY id"))
        held = [tuple(map(str, row)) for row in raw]
    assert stored[3:] == stored[:3]
    assert held[3:] == held[:3]
    assert stored[0][1] == at and stored[0][-1] == {"user_agent": 'Ü "x"'}


def test_the_pixel_and_the_redirect_are_what_a_starlette_route_sends(
    start_server: Callable[..., LiveServer], tmp_path: Path
) -> None:
    server = start_server()
    rt = Runtime(server.settings)
    try:
        campaign = new_campaign(rt, write_post(tmp_path, "tracked", "Tracked", [LINK]))
    finally:
        rt.close()
    token = Signer(server.settings.secret_keys).sign_ids(Purpose.TRACK, campaign, 1)
    with httpx.Client(base_url=server.url) as client:
        pixel = client.get(f"/o/{token}.gif")
        head = client.head(f"/o/{token}.gif")
        click = client.get(f"/c/{token}/0")
    assert (pixel.status_code, pixel.content, head.status_code, head.content) == (
        200, PIXEL, 200, b""
    )  # fmt: skip
    starlette = Response(PIXEL, media_type="image/gif", headers=HEADERS).raw_headers
    assert _ours(pixel) == _ours(head) == starlette
    assert click.status_code == 302 and click.content == b""
    assert _ours(click) == RedirectResponse(LINK, 302, headers=HEADERS).raw_headers
    server.app.state.events.flush()
    assert [e.kind for e in events_of(server.app.state.sessions)] == ["opened", "opened", "clicked"]


def _ours(answer: httpx.Response) -> list[tuple[bytes, bytes]]:
    """The answer's headers, in order, less those uvicorn adds to every answer."""
    return [(k.lower(), v) for k, v in answer.headers.raw if k.lower() not in (b"date", b"server")]


def test_what_start_up_built_is_frozen_while_the_app_serves(
    settings: Settings, database_url: str, tmp_path: Path
) -> None:
    """So that no full collection walks it (a pause of every request in flight)."""
    with serve(settings, database_url, tmp_path):
        assert gc.get_freeze_count() > 0
    assert gc.get_freeze_count() == 0


@pytest.fixture
def postgres(postgres_url: str) -> Iterator[Engine]:
    engine = make_engine(postgres_url)
    yield engine
    engine.dispose()


@pytest.mark.parametrize("path", ["/o/forged.1.x.gif", "/no/such/page"])
def test_a_page_waiting_for_the_database_holds_no_other_request(
    settings: Settings, postgres_url: str, postgres: Engine, tmp_path: Path, path: str
) -> None:
    """A "not found" page (the tracking routes' and the app's) asks the database for its
    language: while a lock holds that query, the same process still answers a pixel."""
    token = Signer(settings.secret_keys).sign_ids(Purpose.TRACK, 1, 1)
    with (
        serve(settings, postgres_url, tmp_path, lang="") as server,
        ThreadPoolExecutor(1) as pool,
        postgres.connect() as holder,
    ):
        holder.execute(text("LOCK TABLE campaigns IN ACCESS EXCLUSIVE MODE"))
        try:
            page = pool.submit(httpx.get, server.url + path, headers=BROWSER, timeout=60)
            _wait_for_a_lock_wait(postgres)
            pixel = httpx.get(f"{server.url}/o/{token}.gif", timeout=10)  # 10 s: not for ever
            assert not page.done()
        finally:
            holder.rollback()
        assert pixel.status_code == 200
        assert page.result().status_code == 404


def _wait_for_a_lock_wait(engine: Engine) -> None:
    """Until a query of this database waits for a lock (the page's)."""
    waiting = text(
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE datname = current_database() AND wait_event_type = 'Lock'"
    )
    deadline = time.monotonic() + 30
    with engine.connect() as connection:
        while not connection.scalar(waiting):
            assert time.monotonic() < deadline, "no query waited for the lock"
            time.sleep(0.02)


def test_an_unexpected_error_is_answered_as_the_app_answers_one(
    start_server: Callable[..., LiveServer], engine: Engine
) -> None:
    """With the tables gone, a click (its link table not yet read) and the archive fail
    alike: a 500 with the security headers, and the error in the server's log."""
    server = start_server()
    token = Signer(server.settings.secret_keys).sign_ids(Purpose.TRACK, 1, 1)
    renames = [("campaigns", "campaigns_away"), ("campaign_links", "campaign_links_away")]
    with engine.begin() as connection:
        for name, away in renames:
            connection.execute(text(f"ALTER TABLE {name} RENAME TO {away}"))
    try:
        with httpx.Client(base_url=server.url, headers={"connection": "close"}) as client:
            click, archive = client.get(f"/c/{token}/0"), client.get("/archive")
    finally:
        with engine.begin() as connection:
            for name, away in renames:
                connection.execute(text(f"ALTER TABLE {away} RENAME TO {name}"))
    assert click.status_code == archive.status_code == 500
    assert click.content == archive.content
    assert _ours(click) == _ours(archive)
    assert {name: click.headers.get(name) for name in SECURITY_HEADERS} == SECURITY_HEADERS
    errors = [r for r in server.log if r.levelno >= logging.ERROR and r.exc_info]
    assert len(errors) == 2
