"""The open pixel and the click redirect: little work per request, events written in batches.

A request checks its token (a keyed hash, microseconds), appends an event to an
in-memory buffer and answers; a background thread writes the buffer to the
database every half second, in small chunks so that it never holds the interpreter
long. Destinations come from the campaign's link table (cached per campaign), so a
click can only lead there.

They are the busiest paths of the service, so they are plain Starlette routes that
``TrackingRoutes`` serves in front of the FastAPI app: no dependency solving, no
exception or header middleware (their answers carry ``SECURITY_HEADERS`` themselves).
Uvicorn's access log still goes through ``access_log.REDACT_TOKENS``.
"""

from __future__ import annotations

import base64
import logging
import re
import threading
import time

from sqlalchemy import select
from sqlalchemy.orm import sessionmaker
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Match, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from mailer.clock import utcnow
from mailer.errors import TokenError
from mailer.metrics import EVENTS
from mailer.tokens import Purpose, Signer
from mailer.tracking.events import Event, EventKind, record
from mailer.tracking.links import CampaignLink, is_machine_open
from mailer.web.guards import SECURITY_HEADERS

__all__ = ["EventBuffer", "LinkTables", "TrackingRoutes"]

log = logging.getLogger(__name__)
PIXEL = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")
MAX_PENDING = 200_000  # events held while the database is unreachable (about 100 MB)
_POSITION = re.compile(r"0|[1-9][0-9]{0,5}")  # a link's place in its campaign's table
NO_CACHE = {"Cache-Control": "no-store, no-cache, must-revalidate, max-age=0", "Pragma": "no-cache"}
HEADERS = {**NO_CACHE, **SECURITY_HEADERS}
# Rows per statement of a flush. The request thread waits for the interpreter while a
# statement's rows are prepared (SQLAlchemy's bind processing, about 9 µs a row on SQLite):
# 200 rows keep that wait under 2 ms, where one statement for 1000 rows held it for 9 ms.
CHUNK = 200


class EventBuffer:
    """Events held in memory and written by one thread, in one statement per flush."""

    def __init__(self, sessions: sessionmaker, interval: float = 0.5) -> None:
        self.sessions = sessions
        self.interval = interval
        self.pending: list[Event] = []
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, name="event-buffer", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def add(self, event: Event) -> None:
        EVENTS.labels(event.source, event.kind.value).inc()
        with self.lock:
            self.pending.append(event)

    def flush(self) -> int:
        with self.lock:
            events, self.pending = self.pending, []
        if events:
            try:
                with self.sessions.begin() as session:
                    for start in range(0, len(events), CHUNK):
                        if start:
                            time.sleep(0)  # lets the request thread take the interpreter
                        record(session, events[start : start + CHUNK])
            except Exception:  # keep them for the next flush rather than lose them
                log.exception("could not write %d tracking events; will retry", len(events))
                with self.lock:
                    self.pending[:0] = events
                    excess = len(self.pending) - MAX_PENDING
                    if excess > 0:  # the database has been away long: memory must not grow
                        del self.pending[:excess]
                        log.error("dropped the %d oldest tracking events", excess)
                return 0
        return len(events)

    def close(self) -> None:
        self.stopped.set()
        if self.thread.is_alive():
            self.thread.join()
        self.flush()

    def _run(self) -> None:
        while not self.stopped.wait(self.interval):
            self.flush()


class LinkTables:
    """Each campaign's links by position, read once per campaign (they never change)."""

    def __init__(self, sessions: sessionmaker) -> None:
        self.sessions = sessions
        self.tables: dict[int, dict[int, str]] = {}

    def url(self, campaign_id: int, position: int) -> str | None:
        if campaign_id not in self.tables:
            with self.sessions() as session:
                rows = session.execute(
                    select(CampaignLink.position, CampaignLink.url).where(
                        CampaignLink.campaign_id == campaign_id
                    )
                )
                self.tables[campaign_id] = {position: url for position, url in rows}
        return self.tables[campaign_id].get(position)


def _not_found(request: Request) -> Response:
    pages = request.app.state.pages
    page = pages.message(pages.strings["link_invalid_title"], pages.strings["link_invalid"], 404)
    for name, value in SECURITY_HEADERS.items():
        page.headers.setdefault(name, value)
    return page


def _verify(request: Request, token: str) -> tuple[int, ...] | None:
    """The campaign and delivery a reader's tracking token names; None if it is not genuine."""
    signer: Signer = request.app.state.signer
    try:
        return signer.verify_ids(Purpose.TRACK, token, 2)
    except TokenError:
        return None


async def open_pixel(request: Request) -> Response:
    token = request.path_params["token"]
    ids = _verify(request, token)
    if ids is None:
        return _not_found(request)
    campaign_id, delivery_id = ids
    agent = request.headers.get("user-agent", "")
    # The address only decides ``machine`` (is_machine_open parses it, and is not misled by
    # text that is no address): not parsed twice, and never stored.
    host = request.client.host if request.client else ""
    request.app.state.events.add(
        Event(
            EventKind.OPENED,
            utcnow(),
            "tracking",
            campaign_id=campaign_id,
            delivery_id=delivery_id,
            machine=is_machine_open(host, agent),
            raw={"user_agent": agent[:300]},
        )
    )
    return Response(PIXEL, media_type="image/gif", headers=HEADERS)


async def click(request: Request) -> Response:
    token, link = request.path_params["token"], request.path_params["link"]
    ids = _verify(request, token)
    if ids is None or not _POSITION.fullmatch(link):
        return _not_found(request)
    campaign_id, delivery_id = ids
    position = int(link)
    links: LinkTables = request.app.state.links
    if campaign_id in links.tables:  # the usual case: no database work at all
        url = links.tables[campaign_id].get(position)
    else:
        url = await run_in_threadpool(links.url, campaign_id, position)
    if url is None:
        return _not_found(request)
    request.app.state.events.add(
        Event(
            EventKind.CLICKED,
            utcnow(),
            "tracking",
            campaign_id=campaign_id,
            delivery_id=delivery_id,
            position=position,
            raw={"url": url},
        )
    )
    return RedirectResponse(url, status_code=302, headers=HEADERS)


ROUTES = (
    Route("/o/{token}.gif", open_pixel, methods=["GET"], include_in_schema=False),
    Route("/c/{token}/{link}", click, methods=["GET"], include_in_schema=False),
)


class TrackingRoutes:
    """ASGI middleware serving ``ROUTES`` itself; every other request (another method on
    these paths too) goes on to ``app``. Add it last, so that it is the outermost."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"][:3] in ("/o/", "/c/"):
            for route in ROUTES:
                match, child = route.matches(scope)
                if match is Match.FULL:
                    scope.update(child)
                    await route.handle(scope, receive, send)
                    return
        await self.app(scope, receive, send)
