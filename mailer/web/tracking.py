"""The open pixel and the click redirect: little work per request, events written in batches.

A request checks its token (a keyed hash, microseconds), appends an event to an
in-memory buffer and answers; a background thread writes the buffer to the
database in one statement every half second. Destinations come from the
campaign's link table (cached per campaign), so a click can only lead there.
"""

from __future__ import annotations

import base64
import logging
import re
import threading

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy import select
from sqlalchemy.orm import sessionmaker
from starlette.concurrency import run_in_threadpool

from mailer.clock import utcnow
from mailer.errors import TokenError
from mailer.metrics import EVENTS
from mailer.tokens import Purpose, Signer
from mailer.tracking.events import Event, EventKind, record
from mailer.tracking.links import CampaignLink, is_machine_open
from mailer.web.guards import client_ip

__all__ = ["EventBuffer", "LinkTables", "router"]

log = logging.getLogger(__name__)
router = APIRouter()
PIXEL = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")
MAX_PENDING = 200_000  # events held while the database is unreachable (about 100 MB)
_POSITION = re.compile(r"0|[1-9][0-9]{0,5}")  # a link's place in its campaign's table
NO_CACHE = {"Cache-Control": "no-store, no-cache, must-revalidate, max-age=0", "Pragma": "no-cache"}


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
                    record(session, events)
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
    return pages.message(pages.strings["link_invalid_title"], pages.strings["link_invalid"], 404)


def _verify(request: Request, token: str) -> tuple[int, ...] | None:
    """The campaign and delivery a reader's tracking token names; None if it is not genuine."""
    signer: Signer = request.app.state.signer
    try:
        return signer.verify_ids(Purpose.TRACK, token, 2)
    except TokenError:
        return None


@router.get("/o/{token}.gif", include_in_schema=False)
async def open_pixel(request: Request, token: str) -> Response:
    ids = _verify(request, token)
    if ids is None:
        return _not_found(request)
    campaign_id, delivery_id = ids
    agent = request.headers.get("user-agent", "")
    request.app.state.events.add(
        Event(
            EventKind.OPENED,
            utcnow(),
            "tracking",
            campaign_id=campaign_id,
            delivery_id=delivery_id,
            machine=is_machine_open(client_ip(request), agent),
            raw={"user_agent": agent[:300]},
        )
    )
    return Response(PIXEL, media_type="image/gif", headers=NO_CACHE)


@router.get("/c/{token}/{link}", include_in_schema=False)
async def click(request: Request, token: str, link: str) -> Response:
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
    return RedirectResponse(url, status_code=302, headers=NO_CACHE)
