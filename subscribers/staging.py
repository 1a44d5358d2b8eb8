"""The import's SQL: the file's rows into a temporary table, then a few set-based statements.

Row by row, an import of a million addresses spent most of its time in the driver
(parameter arrays built in Python) and in round trips. Here the good rows stream into
``import_rows`` (PostgreSQL: ``COPY`` through psycopg, while the file is still being
read; SQLite: ``executemany`` of plain tuples), and then, whole-file:

1. rows that say an address left the old tool (unsubscribed, cleaned, blocked) go into
   the suppression list, and subscribers already here with that address are taken off;
2. the report's counts are taken: rows for suppressed addresses, for addresses already on
   the list, and the rest;
3. one ``INSERT … SELECT`` in file order adds the rest (``ON CONFLICT DO NOTHING``: the
   first row of an address wins, later ones are repeats, and a form submission racing
   the import is fine). On SQLite it goes in slices of ``SLICE`` lines, each committed,
   so the web app's writes are never held up for long; on PostgreSQL in one.

Step 1 comes first, so a departure anywhere in the file wins over a subscription
anywhere in it. Temporary tables are the connection's own: nothing is left behind.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

from sqlalchemy import JSON, Connection, bindparam, text

from mailer.store.db import UTCDateTime
from subscribers.sources import GONE

__all__ = ["Counts", "StagedRow", "Staging"]

# (line, email, email_hash, name, tags as JSON, consent_at, confirmed_at, consent_ip, outcome)
StagedRow = tuple[int, str, str, str, str, dt.datetime | None, dt.datetime | None, str, str]
SLICE = 50_000  # SQLite: lines per committed insert
# SQLite: the import's page cache (KiB). The default 2 MB thrashes on a million-entry
# unique index; this is a fixed cost, whatever the file's size, and undone afterwards.
SQLITE_CACHE_KIB = 65536
COLUMNS = "line, email, email_hash, name, tags, consent_at, confirmed_at, consent_ip, outcome"
_GONE = ", ".join(f"'{reason}'" for reason in GONE)
_NOW = bindparam("now", type_=UTCDateTime())

# One row per good line of the file. "line" is the physical line a row starts on: the key,
# and the order in which the first of two rows for an address wins.
_CREATE = {
    # work_mem: the sorts and hashes over a million staged rows stay in memory, for this
    # transaction only.
    "postgresql": """
        SET LOCAL work_mem = '64MB';
        CREATE TEMP TABLE import_rows (
            line bigint PRIMARY KEY, email text NOT NULL, email_hash text NOT NULL,
            name text NOT NULL, tags text NOT NULL, consent_at timestamptz,
            confirmed_at timestamptz, consent_ip text NOT NULL, outcome text NOT NULL
        ) ON COMMIT DROP
    """,
    "sqlite": """
        CREATE TEMP TABLE import_rows (
            line INTEGER PRIMARY KEY, email TEXT NOT NULL, email_hash TEXT NOT NULL,
            name TEXT NOT NULL, tags TEXT NOT NULL, consent_at TEXT, confirmed_at TEXT,
            consent_ip TEXT NOT NULL, outcome TEXT NOT NULL
        )
    """,
}
_STAGE_SQLITE = f"INSERT INTO import_rows ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
_DROP_SQLITE = "DROP TABLE IF EXISTS temp.import_rows"

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

# 3. The subscribers themselves, in file order. Rows whose own times are unknown get the
# import's moment.
_INSERT = f"""
    INSERT INTO subscribers (email, email_hash, name, tags, status, source, created_at,
        confirmed_at, consent_at, consent_ip, consent_user_agent, consent_source, consent_text,
        soft_bounces)
    SELECT r.email, r.email_hash, r.name, {{tags}}, r.outcome, :source, :now,
        CASE WHEN r.outcome = 'confirmed' THEN COALESCE(r.confirmed_at, r.consent_at, :now) END,
        COALESCE(r.consent_at, :now), r.consent_ip, '', :source, :consent_text, 0
    FROM import_rows r
    WHERE r.line > :after AND r.line <= :upto AND r.outcome NOT IN ({_GONE})
        AND NOT EXISTS (SELECT 1 FROM suppressions s WHERE s.email_hash = r.email_hash)
    ORDER BY r.line
    ON CONFLICT (email_hash) DO NOTHING
"""
_INSERTS = {
    "postgresql": text(_INSERT.format(tags="CAST(r.tags AS json)")).bindparams(_NOW),
    "sqlite": text(_INSERT.format(tags="r.tags")).bindparams(_NOW),
}


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
        self.dialect = connection.dialect.name
        self._copy: Any = None  # psycopg's Copy, while the rows stream in
        self._copying = ExitStack()  # the cursor and the COPY it runs
        self._cache_kib: Any = None  # SQLite's page cache before the import
        self._time = (
            UTCDateTime().dialect_impl(connection.dialect).bind_processor(connection.dialect)
        )

    def __enter__(self) -> Staging:
        connection = self.connection
        if self.dialect == "sqlite":
            connection.exec_driver_sql(_DROP_SQLITE)
            self._cache_kib = connection.exec_driver_sql("PRAGMA cache_size").scalar()
            connection.exec_driver_sql(f"PRAGMA cache_size = -{SQLITE_CACHE_KIB}")
        for statement in _CREATE[self.dialect].split(";"):
            connection.exec_driver_sql(statement)
        if self.dialect == "postgresql":
            driver = connection.connection.driver_connection
            cursor = self._copying.enter_context(driver.cursor())
            statement = f"COPY import_rows ({COLUMNS}) FROM STDIN"
            self._copy = self._copying.enter_context(cursor.copy(statement))
        return self

    def __exit__(self, kind: Any, error: Any, trace: Any) -> None:
        """A failed COPY is abandoned (the transaction with it); SQLite's table dropped."""
        self._end_copy(kind, error, trace)
        if self.dialect == "sqlite":
            self.connection.exec_driver_sql(_DROP_SQLITE)
            if self._cache_kib is not None:
                self.connection.exec_driver_sql(f"PRAGMA cache_size = {int(self._cache_kib)}")

    def _end_copy(self, kind: Any = None, error: Any = None, trace: Any = None) -> None:
        if self._copy is not None:
            self._copy = None
            self._copying.__exit__(kind, error, trace)

    def add(self, rows: Iterable[StagedRow]) -> None:
        """Stage good rows (streamed into the COPY on PostgreSQL)."""
        if self.dialect == "postgresql":
            write = self._copy.write_row
            for row in rows:
                write(row)
            return
        time = self._time
        staged = [
            row
            if row[5] is None and row[6] is None
            else (*row[:5], time(row[5]), time(row[6]), *row[7:])
            for row in rows
        ]
        if staged:
            self.connection.exec_driver_sql(_STAGE_SQLITE, staged)

    def finish(self, source: str, consent_text: str, detail: str) -> Counts:
        """Suppress, count and add; on SQLite the slices are committed as they go."""
        connection = self.connection
        sqlite = self.dialect == "sqlite"
        if not sqlite:
            self._end_copy()
            connection.exec_driver_sql("ANALYZE import_rows")  # temp tables have no autovacuum
        now = dt.datetime.now(dt.UTC)
        counts = Counts()
        connection.execute(_SUPPRESS, {"now": now, "detail": detail})
        history = {"how": "import", "source": source}
        connection.execute(_HISTORY, {"now": now, "history": history})
        counts.taken_off = connection.execute(_TAKE_OFF, {"now": now}).rowcount
        gone, suppressed, wanted, existing, last = map(int, connection.execute(_COUNTS).one())
        counts.gone, counts.suppressed, counts.existing = gone, suppressed, existing
        if sqlite:
            connection.commit()  # the suppressions first, whatever happens to the rest
        params = {"source": source, "consent_text": consent_text, "now": now}
        step = SLICE if sqlite else max(last, 1)
        for after in range(0, last, step):
            insert = {**params, "after": after, "upto": after + step}
            counts.added += connection.execute(_INSERTS[self.dialect], insert).rowcount
            if sqlite:
                connection.commit()
        # Rows neither added nor on the list before: later rows of an address this import
        # added (or, rarely, one a form added since the count).
        counts.repeated = wanted - existing - counts.added
        return counts
