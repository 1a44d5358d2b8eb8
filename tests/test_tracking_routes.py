"""The pixel and the click as plain Starlette routes in front of the app, and the flush
that writes the event buffer in chunks."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
from sqlalchemy import event, func, select
from sqlalchemy.orm import sessionmaker

from mailer.clock import utcnow
from mailer.tracking.events import Event, EventKind, EventRecord
from mailer.web.guards import SECURITY_HEADERS
from mailer.web.tracking import CHUNK, EventBuffer
from tests.live_server import LiveServer, server_factory

start_server = server_factory()


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
