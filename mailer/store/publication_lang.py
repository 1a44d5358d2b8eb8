"""The publication's language, for what is not a post: web pages, the confirmation email.

``MAILER_LANG`` when set. Empty, the language of the latest campaign's edition: the last
issue readers got is what they read the publication in, and the database is the one
thing the web app, the workers and the CLI share (a web server may have no posts/).
Before any campaign, English.
"""

from __future__ import annotations

import time

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from mailer.config import Settings
from mailer.store.ledger import Campaign

__all__ = ["DEFAULT_LANG", "PublicationLang"]

DEFAULT_LANG = "en"
# A page asks once a minute at most: a new issue's language shows within a minute.
CACHE_SECONDS = 60.0


class PublicationLang:
    """A callable giving the publication's language now (cached ``CACHE_SECONDS``). A
    ``stale`` one waits for the database: code on an event loop calls it in a thread then
    (a sync route, ``run_in_threadpool``), or every request of the process waits with it."""

    def __init__(self, settings: Settings, sessions: sessionmaker[Session] | None) -> None:
        self.fixed = settings.lang
        self.sessions = sessions
        self.lang = DEFAULT_LANG
        self.asked = -CACHE_SECONDS

    @property
    def stale(self) -> bool:
        """Whether a call now asks the database."""
        asks = not self.fixed and self.sessions is not None
        return asks and time.monotonic() - self.asked >= CACHE_SECONDS

    def __call__(self) -> str:
        if self.fixed or self.sessions is None:
            return self.fixed or DEFAULT_LANG
        if self.stale:
            self.lang = _latest(self.sessions) or DEFAULT_LANG
            self.asked = time.monotonic()
        return self.lang


def _latest(sessions: sessionmaker[Session]) -> str | None:
    """The language of the latest campaign's edition, if there is one."""
    query = select(Campaign.edition).order_by(Campaign.id.desc()).limit(1)
    with sessions() as session:
        edition = session.scalar(query)
    lang = (edition or {}).get("lang")
    return lang if isinstance(lang, str) and lang else None
