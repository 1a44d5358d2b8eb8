"""The import's SQL: the file's rows into a temporary table, then a few set-based statements.

Row by row, an import of a million addresses spent most of its time in the driver
(parameter arrays built in Python) and in round trips. Here the good rows stream into
``import_rows`` (``mailer.store.dialect.stream_rows``: ``COPY`` on PostgreSQL, while the
file is still being read; ``executemany`` of plain tuples on SQLite), and then, whole-file:

1. rows that say an address left the old tool (unsubscribed, cleaned, blocked) go into
   the suppression list, and subscribers already here with that address are taken off
   (three statements, each a scan of the rows: skipped when ``add`` saw no such row);
2. the report's counts are taken: rows for suppressed addresses, for addresses already on
   the list, and the rest (on an empty list, with no departures in the file, ``add``'s
   own count of the rows says it all);
3. ``INSERT … SELECT`` adds the rest: the first row of an address wins, later ones are
   repeats. On SQLite it goes in file order, in slices of ``SLICE`` lines, each committed
   so the web app's writes are never held up for long (``commits_in_slices``), and
   ``ON CONFLICT DO NOTHING`` skips the repeats. On PostgreSQL it goes in one statement
   that picks each address's first row itself and inserts in the order of the unique
   index on ``email_hash`` (so new subscribers' ids follow that order, not the file's):
   in file order every row lands on a random page of that index, and ``ON CONFLICT``
   checks each one before inserting it: 12.7 s of the server's CPU for a million rows,
   against 5.5 s so. A form submission racing the import (the one case the statement's
   own check cannot see) undoes that statement, and the ``ON CONFLICT`` one runs instead.

Step 1 comes first, so a departure anywhere in the file wins over a subscription
anywhere in it. Temporary tables are the connection's own: nothing is left behind.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

from sqlalchemy import JSON, Column, Connection, MetaData, Table, Text, bindparam, text
from sqlalchemy.exc import IntegrityError

from mailer.clock import utcnow
from mailer.store.db import UTCDateTime
from mailer.store.dialect import (
    BIG_ROWID,
    analyze,
    bulk_memory,
    commits_in_slices,
    rowid_key,
    stream_rows,
    temporary,
)
from subscribers.sources import GONE

__all__ = ["Counts", "StagedRow", "Staging"]

# (line, email, email_hash, name, tags as JSON, consent_at, confirmed_at, consent_ip, outcome)
StagedRow = tuple[int, str, str, str, str, dt.datetime | None, dt.datetime | None, str, str]
SLICE = 50_000  # SQLite: lines per committed insert
_GONE = ", ".join(f"'{reason}'" for reason in GONE)
_NOW = bindparam("now", type_=UTCDateTime())

# One row per good line of the file, this connection's own (its own metadata: no migration
# or create_all sees it). "line" is the physical line a row starts on: the order in which
# the first of two rows for an address wins, and SQLite's rowid. "tags" is the JSON text
# the importer wrote, stored as it came.
ROWS = Table(
    "import_rows",
    MetaData(),
    Column("line", BIG_ROWID, nullable=False, autoincrement=False),
    Column("email", Text, nullable=False),
    Column("email_hash", Text, nullable=False),
    Column("name", Text, nullable=False),
    Column("tags", JSON, nullable=False),
    Column("consent_at", UTCDateTime),
    Column("confirmed_at", UTCDateTime),
    Column("consent_ip", Text, nullable=False),
    Column("outcome", Text, nullable=False),
    rowid_key("line"),
    prefixes=["TEMPORARY"],
    postgresql_on_commit="drop",
)

# 1. The file's departures join the suppression list (a reason already there stays) ...
_SUPPRESS = text(
    f"""
    INSERT INTO suppressions (email_hash, reason, created_at, detail)
    SELECT r.email_hash, MIN(r.outcome), :now, :detail FROM import_rows r
    WHERE r.outcome IN ({_GONE})
    GROUP BY r.email_hash
    ON CONFLICT (email_hash) DO NOTHING
    """
).bindparams(_NOW)
# ... and whoever is on the list with such an address leaves it, with a line in their history.
_TAKEN_OFF = f"""
    status IN ('pending', 'confirmed')
    AND email_hash IN (SELECT email_hash FROM import_rows WHERE outcome IN ({_GONE}))
"""
_NEW_STATUS = f"""
    (SELECT CASE MIN(r.outcome) WHEN 'bounced' THEN 'bounced'
        WHEN 'complained' THEN 'complained' ELSE 'unsubscribed' END
     FROM import_rows r WHERE r.email_hash = subscribers.email_hash AND r.outcome IN ({_GONE}))
"""
_HISTORY = text(
    f"INSERT INTO activity (subscriber_id, kind, at, detail) "
    f"SELECT id, {_NEW_STATUS}, :now, :history FROM subscribers WHERE {_TAKEN_OFF}"
).bindparams(_NOW, bindparam("history", type_=JSON()))
_TAKE_OFF = text(
    f"UPDATE subscribers SET status = {_NEW_STATUS}, unsubscribed_at = :now WHERE {_TAKEN_OFF}"
).bindparams(_NOW)

# 2. Of the rows that would add a subscriber: how many are suppressed, how many are not,
# and how many of those are for an address on the list already.
_COUNTS = text(
    f"""
    SELECT
        COALESCE(SUM(CASE WHEN r.outcome IN ({_GONE}) THEN 1 ELSE 0 END), 0),
        COALESCE(SUM(CASE WHEN r.outcome NOT IN ({_GONE}) AND s.email_hash IS NOT NULL
                     THEN 1 ELSE 0 END), 0),
        COALESCE(SUM(CASE WHEN r.outcome NOT IN ({_GONE}) AND s.email_hash IS NULL
                     THEN 1 ELSE 0 END), 0),
        COALESCE(SUM(CASE WHEN r.outcome NOT IN ({_GONE}) AND s.email_hash IS NULL
                     AND x.email_hash IS NOT NULL THEN 1 ELSE 0 END), 0),
        COALESCE(MAX(r.line), 0)
    FROM import_rows r
    LEFT JOIN suppressions s ON s.email_hash = r.email_hash
    LEFT JOIN subscribers x ON x.email_hash = r.email_hash
    """
)

# ... unless there is nothing to count against: no subscriber, no suppressed address.
_NOTHING_LISTED = text(
    "SELECT NOT EXISTS (SELECT 1 FROM subscribers) AND NOT EXISTS (SELECT 1 FROM suppressions)"
)

# 3. The subscribers themselves. Rows whose own times are unknown get the import's moment.
_COLUMNS = """
    INSERT INTO subscribers (email, email_hash, name, tags, status, source, created_at,
        confirmed_at, consent_at, consent_ip, consent_user_agent, consent_source, consent_text,
        soft_bounces)
    SELECT r.email, r.email_hash, r.name, r.tags, r.outcome, :source, :now,
        CASE WHEN r.outcome = 'confirmed' THEN COALESCE(r.confirmed_at, r.consent_at, :now) END,
        COALESCE(r.consent_at, :now), r.consent_ip, '', :source, :consent_text, 0
"""
_WANTED = f"""
    r.outcome NOT IN ({_GONE})
    AND NOT EXISTS (SELECT 1 FROM suppressions s WHERE s.email_hash = r.email_hash)
"""
# In file order, a slice of lines at a time; a row whose address is there already is skipped.
_INSERT = text(
    f"""
    {_COLUMNS}
    FROM import_rows r
    WHERE r.line > :after AND r.line <= :upto AND {_WANTED}
    ORDER BY r.line
    ON CONFLICT (email_hash) DO NOTHING
    """
).bindparams(_NOW)
# PostgreSQL, the whole file at once: each new address's first row, in the unique index's
# order. Sorted byte by byte (COLLATE "C"): the same order for these hex digests, without
# the locale's string comparison.
_INSERT_FIRSTS = text(
    f"""
    {_COLUMNS}
    FROM (
        SELECT DISTINCT ON (r.email_hash COLLATE "C") r.* FROM import_rows r
        WHERE {_WANTED}
            AND NOT EXISTS (SELECT 1 FROM subscribers x WHERE x.email_hash = r.email_hash)
        ORDER BY r.email_hash COLLATE "C", r.line
    ) r
    """
).bindparams(_NOW)


@dataclass
class Counts:
    gone: int = 0  # rows saying the address left the old tool: suppressed now
    taken_off: int = 0  # subscribers here whom those rows took off the list
    suppressed: int = 0  # rows for an address that is suppressed: not added
    existing: int = 0  # rows for an address that was on the list before
    added: int = 0
    repeated: int = 0  # rows for an address an earlier row of the file added


class Staging:
    """One import's temporary table on ``connection`` (which the caller commits), for a
    ``with`` block: rows are ``add``-ed, then ``finish`` writes them."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self._open = ExitStack()  # the memory, the table, and (until finish) the rows' writer
        self._writing = ExitStack()
        self._write: Any = None
        self._staged = self._last = 0  # rows staged, and the line of the last one
        self._departures = 0  # rows saying an address left: none, and step 1 has nothing to do

    def __enter__(self) -> Staging:
        connection = self.connection
        with ExitStack() as opening:
            opening.enter_context(bulk_memory(connection))
            opening.enter_context(temporary(connection, ROWS))
            self._write = self._writing.enter_context(stream_rows(connection, ROWS))
            opening.enter_context(self._writing)
            self._open = opening.pop_all()
        return self

    def __exit__(self, kind: Any, error: Any, trace: Any) -> None:
        """A failed COPY is abandoned (the transaction with it); SQLite's table dropped."""
        self._open.__exit__(kind, error, trace)

    def add(self, rows: Iterable[StagedRow]) -> None:
        """Stage good rows (streamed into the COPY on PostgreSQL)."""
        rows = rows if isinstance(rows, list) else list(rows)
        if rows:
            self._staged += len(rows)
            self._last = rows[-1][0]
            self._departures += sum(row[8] in GONE for row in rows)
        self._write(rows)

    def finish(self, source: str, consent_text: str, detail: str) -> Counts:
        """Suppress, count and add; on SQLite the slices are committed as they go."""
        connection = self.connection
        self._writing.close()  # the COPY ends here
        now = utcnow()
        counts = Counts()
        if not self._departures and connection.execute(_NOTHING_LISTED).scalar_one():
            # The first import into a new list: every row is wanted, none is there already
            # (nothing to count against, nor to plan for).
            wanted, existing, last = self._staged, 0, self._last
        else:
            analyze(connection, ROWS)
            if self._departures:
                connection.execute(_SUPPRESS, {"now": now, "detail": detail})
                history = {"how": "import", "source": source}
                connection.execute(_HISTORY, {"now": now, "history": history})
                counts.taken_off = connection.execute(_TAKE_OFF, {"now": now}).rowcount
            gone, suppressed, wanted, existing, last = map(int, connection.execute(_COUNTS).one())
            counts.gone, counts.suppressed, counts.existing = gone, suppressed, existing
        sliced = commits_in_slices(connection)
        if sliced:
            connection.commit()  # the suppressions first, whatever happens to the rest
        params = {"source": source, "consent_text": consent_text, "now": now}
        if sliced:
            for after in range(0, last, SLICE):
                insert = {**params, "after": after, "upto": after + SLICE}
                counts.added += connection.execute(_INSERT, insert).rowcount
                connection.commit()
        else:
            counts.added = _insert_at_once(connection, params, last)
        # Rows neither added nor on the list before: later rows of an address this import
        # added (or, rarely, one a form added since the count).
        counts.repeated = wanted - existing - counts.added
        return counts


def _insert_at_once(connection: Connection, params: dict[str, Any], last: int) -> int:
    """The subscribers added, by ``_INSERT_FIRSTS``; if an address it found new was added
    by someone else meanwhile, that statement is undone and ``_INSERT`` adds them all."""
    try:
        with connection.begin_nested():
            return int(connection.execute(_INSERT_FIRSTS, params).rowcount)
    except IntegrityError:
        everything = {**params, "after": 0, "upto": last}
        return int(connection.execute(_INSERT, everything).rowcount)
