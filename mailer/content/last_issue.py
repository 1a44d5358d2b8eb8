"""The preheader of the last issue that went out, for lint to compare a new one with.

A weekly whose first paragraph is boilerplate ("This week in …") shows the same line in
the inbox every week. Lint reads the last sent campaign's frozen edition when a store is at
hand; without one (a laptop with no database yet, a store that is down) there is nothing
to compare with, and lint works as before. A SQLite file that does not exist is not made.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

from mailer.config import Settings

__all__ = ["last_sent_preheader"]

# A SQLite URL's file as SQLAlchemy reads it (sqlite[+driver]://[host]/FILE[?query]), read
# here without SQLAlchemy: `mailer preview` on a laptop with no store never loads it.
_SQLITE_FILE = re.compile(r"sqlite(?:\+\w+)?://[^/?]*(?:/(?P<file>[^?]*))?")


def last_sent_preheader(settings: Settings, slug: str) -> str | None:
    """The preheader of the latest campaign sent of another post than ``slug``, if known."""
    sqlite = _SQLITE_FILE.match(settings.database_url)
    if sqlite and not (sqlite["file"] and Path(unquote(sqlite["file"])).is_file()):
        return None
    # Imported here: `mailer preview` without a store loads no database driver.
    from sqlalchemy import select
    from sqlalchemy.exc import SQLAlchemyError

    from mailer.errors import ConfigError
    from mailer.store.db import make_engine, make_sessions
    from mailer.store.ledger import PUBLISHED, Campaign

    try:
        engine = make_engine(settings.database_url)
    except ConfigError:
        return None
    try:
        with make_sessions(engine)() as session:
            edition = session.scalar(
                select(Campaign.edition)
                .where(PUBLISHED, Campaign.slug != slug)
                .order_by(Campaign.started_at.desc(), Campaign.id.desc())
                .limit(1)
            )
    except SQLAlchemyError:
        return None  # no tables yet, or the store is down: nothing to compare with
    finally:
        engine.dispose()
    preheader = (edition or {}).get("preheader")
    return str(preheader) if preheader else None
