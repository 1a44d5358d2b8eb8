"""The open pixel and the click redirect: little work per request, events written in batches.

A request checks its token (a keyed hash, microseconds), appends an event to an
in-memory buffer and answers; a background thread writes the buffer to the
database every half second, in small chunks so that it never holds the interpreter
long. Destinations come from the campaign's link table (cached per campaign), so a
click can only lead there.

They are the busiest paths of the service, so ``TrackingRoutes`` answers them in
bare ASGI before the FastAPI app sees the request: no middleware, routing, request
or response objects. The answers are built once, by Starlette's own response classes
(so the bytes are those a Starlette route sends), with ``SECURITY_HEADERS``. Uvicorn's
access log still goes through ``access_log.REDACT_TOKENS``. Nothing here waits on the
event loop for the database: a link table, and the language of the "not found" page when
it is to be asked again, are read in the thread pool. An unexpected error is answered as
the app answers one.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import re
import threading
import time
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import sessionmaker
from starlette.concurrency import run_in_threadpool
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import compile_path
from starlette.types import Receive, Scope, Send

from mailer.clock import utcnow
from mailer.errors import TokenError
from mailer.metrics import EVENTS
from mailer.tokens import Purpose, Signer
from mailer.tracking.events import Event, EventKind, record
from mailer.tracking.links import CampaignLink, is_machine_open
from mailer.web.guards import SECURITY_HEADERS
from mailer.web.pages import Pages

__all__ = ["EventBuffer", "LinkTables", "TrackingRoutes"]

log = logging.getLogger(__name__)
PIXEL = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")
MAX_PENDING = 200_000  # events held while the database is unreachable (about 100 MB)
_POSITION = re.compile(r"0|[1-9][0-9]{0,5}")  # a link's place in its campaign's table
# The paths as Starlette's routes match them (``compile_path``), for GET and HEAD.
_PIXEL_PATH = compile_path("/o/{token}.gif")[0]
_CLICK_PATH = compile_path("/c/{token}/{link}")[0]
NO_CACHE = {"Cache-Control": "no-store, no-cache, must-revalidate, max-age=0", "Pragma": "no-cache"}
HEADERS = {**NO_CACHE, **SECURITY_HEADERS}
_PIXEL_HEADERS = Response(PIXEL, media_type="image/gif", headers=HEADERS).raw_headers
# An unexpected error's answer, as the app's: Starlette's ServerErrorMiddleware's, with the
# headers ``SecurityHeaders`` adds to it.
_ERROR = PlainTextResponse("Internal Server Error", status_code=500)
_ERROR.headers.update(SECURITY_HEADERS)
# Rows per statement of a flush. The request thread waits for the interpreter while a
# statement's rows are prepared: 200 rows keep that wait well under a millisecond.
CHUNK = 200

Headers = list[tuple[bytes, bytes]]


class EventBuffer:
    """Events held in memory and written by one thread, in one statement per flush."""

    def __init__(self, sessions: sessionmaker, interval: float = 0.5) -> None:
        self.sessions = sessions
        self.interval = interval
        self.pending: list[Event] = []
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, name="event-buffer", daemon=True)
        self.counters: dict[tuple[str, EventKind], Any] = {}  # EVENTS' children, found once

    def start(self) -> None:
        self.thread.start()

    def add(self, event: Event) -> None:
        counter = self.counters.get((event.source, event.kind))
        if counter is None:
            counter = EVENTS.labels(event.source, event.kind.value)
            self.counters[event.source, event.kind] = counter
        counter.inc()
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
    """Each campaign's links by position, read once per campaign (they never change), with
    each link's redirect headers."""

    def __init__(self, sessions: sessionmaker) -> None:
        self.sessions = sessions
        self.tables: dict[int, dict[int, tuple[str, Headers]]] = {}

    def link(self, campaign_id: int, position: int) -> tuple[str, Headers] | None:
        """The URL at ``position`` and the headers of a redirect there; None if none."""
        table = self.tables.get(campaign_id)
        if table is None:
            with self.sessions() as session:
                rows = session.execute(
                    select(CampaignLink.position, CampaignLink.url).where(
                        CampaignLink.campaign_id == campaign_id
                    )
                )
                table = {at: (url, _redirect_headers(url)) for at, url in rows}
            self.tables[campaign_id] = table
        return table.get(position)


def _redirect_headers(url: str) -> Headers:
    return RedirectResponse(url, status_code=302, headers=HEADERS).raw_headers


class TrackingRoutes:
    """GET and HEAD of ``/o/<token>.gif`` and ``/c/<token>/<link>``, answered in bare ASGI;
    ``answer`` says whether a request was one of them (another method on these paths is
    not: the app answers it)."""

    def __init__(
        self, signer: Signer, events: EventBuffer, links: LinkTables, pages: Pages
    ) -> None:
        self.signer = signer
        self.events = events
        self.links = links
        self.pages = pages

    async def answer(self, scope: Scope, receive: Receive, send: Send) -> bool:
        if scope["type"] != "http" or scope["method"] not in ("GET", "HEAD"):
            return False
        path: str = scope["path"]
        try:
            if path[:3] == "/o/" and (match := _PIXEL_PATH.match(path)):
                await self._pixel(scope, receive, send, match["token"])
                return True
            if path[:3] == "/c/" and (match := _CLICK_PATH.match(path)):
                await self._click(scope, receive, send, match["token"], match["link"])
                return True
        except Exception:
            # Each route sends its answer last, so none has started unless sending it failed:
            # a 500 as the app's (that failing too is left unsaid), and the error raised again
            # for the server to log (as ServerErrorMiddleware does).
            with contextlib.suppress(Exception):
                await _ERROR(scope, receive, send)
            raise
        return False

    async def _pixel(self, scope: Scope, receive: Receive, send: Send, token: str) -> None:
        ids = self._verify(token)
        if ids is None:
            await self._not_found(scope, receive, send)
            return
        campaign_id, delivery_id = ids
        agent = ""
        for name, value in scope["headers"]:
            if name == b"user-agent":
                agent = value.decode("latin-1")
                break
        # The address only decides ``machine`` (is_machine_open parses it, and is not misled
        # by text that is no address): not parsed twice, and never stored.
        client = scope.get("client")
        host = client[0] if client else ""
        self.events.add(
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
        await send({"type": "http.response.start", "status": 200, "headers": _PIXEL_HEADERS})
        await send({"type": "http.response.body", "body": PIXEL})

    async def _click(
        self, scope: Scope, receive: Receive, send: Send, token: str, position: str
    ) -> None:
        ids = self._verify(token)
        if ids is None or not _POSITION.fullmatch(position):
            await self._not_found(scope, receive, send)
            return
        campaign_id, delivery_id = ids
        at = int(position)
        if campaign_id in self.links.tables:  # the usual case: no database work at all
            link = self.links.tables[campaign_id].get(at)
        else:
            link = await run_in_threadpool(self.links.link, campaign_id, at)
        if link is None:
            await self._not_found(scope, receive, send)
            return
        url, headers = link
        self.events.add(
            Event(
                EventKind.CLICKED,
                utcnow(),
                "tracking",
                campaign_id=campaign_id,
                delivery_id=delivery_id,
                position=at,
                raw={"url": url},
            )
        )
        await send({"type": "http.response.start", "status": 302, "headers": headers})
        await send({"type": "http.response.body", "body": b""})

    def _verify(self, token: str) -> tuple[int, ...] | None:
        """The campaign and delivery a reader's tracking token names; None if not genuine."""
        try:
            return self.signer.verify_ids(Purpose.TRACK, token, 2)
        except TokenError:
            return None

    async def _not_found(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.pages.ask_lang()
        strings = self.pages.strings
        page = self.pages.message(strings["link_invalid_title"], strings["link_invalid"], 404)
        for name, value in SECURITY_HEADERS.items():
            page.headers.setdefault(name, value)
        await page(scope, receive, send)
