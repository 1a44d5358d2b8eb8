"""CSV import that streams: a million rows without loading the file, safe to run twice.

Rows go in chunks, each one short transaction: validate, drop duplicates, look the
chunk's addresses up in the list and the suppression list at once, insert what is
new (``ON CONFLICT DO NOTHING``, so a form submission racing the import is fine).
Bad rows are skipped and reported with their line number and reason; suppressed and
unsubscribed addresses are reported, never brought back. A file that breaks off (a quote
left open swallows the rows after it) stops the import there, saying so.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from sqlalchemy import String, any_, bindparam, select, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, sessionmaker

from mailer.clock import utcnow
from mailer.errors import InvalidAddress, MailerError, UnsafeHeaderValue
from subscribers.addresses import address_hash, normalize
from subscribers.models import Status, Subscriber, Suppression
from subscribers.spreadsheet import from_text
from subscribers.store import Consent, clean_name

__all__ = ["ImportReport", "import_csv"]

CHUNK = 5000
KEPT_PROBLEMS = 1000  # bad rows kept for the report; all of them go to the errors file
# A subscriber is one line; a quoted field (a postal address, a note) may take a few more.
# A row longer than this has swallowed the rows after a quote left open.
MAX_ROW_LINES = 10


@dataclass
class ImportReport:
    rows: int = 0
    added: int = 0
    existing: int = 0
    duplicates: int = 0  # the same address again within this file
    suppressed: int = 0
    bad: int = 0
    problems: list[tuple[int, str]] = field(default_factory=list)  # (line, reason)
    broken: tuple[int, str] | None = None  # (line, why) where the file broke off

    def problem(self, line: int, reason: str) -> None:
        self.bad += 1
        if len(self.problems) < KEPT_PROBLEMS:
            self.problems.append((line, reason))


@dataclass(frozen=True)
class _Row:
    line: int
    email: str
    email_hash: str
    name: str
    tags: list[str]


@dataclass(frozen=True)
class _Header:
    width: int  # how many fields a row may have
    index: dict[str, int]  # our field (email; name, tags if there) → its position

    def field(self, record: list[str], key: str) -> str:
        """The cell, as it was before an export made it safe for spreadsheets."""
        at = self.index.get(key)
        return from_text(record[at]) if at is not None and at < len(record) else ""


class _Lines:
    """The file's lines, for the csv reader. ``ended`` turns true when the reader asks past
    the last one: the record it returns then was closed by the end of the file, not by a
    closing quote (the reader accepts that without a word)."""

    def __init__(self, text: TextIO) -> None:
        self.text = text
        self.ended = False

    def __iter__(self) -> Iterator[str]:
        yield from self.text
        self.ended = True


def import_csv(
    path: Path,
    sessions: sessionmaker,
    consent: Consent,
    *,
    status: Status = Status.CONFIRMED,
    tags: tuple[str, ...] = (),
    progress: Callable[[int], None] | None = None,
    errors_to: TextIO | None = None,
) -> ImportReport:
    """Import ``path``; ``progress`` gets the bytes read so far after each chunk.

    Where the file breaks off (a quote left open) the rows before it are imported, then
    a ``MailerError`` says where and how many were added: running it again is safe.
    """
    report = ImportReport()
    try:
        raw = path.open("rb")
    except OSError as exc:
        raise MailerError(f"{path}: cannot read the file ({exc.strerror})") from exc
    with raw:
        # Undecodable bytes become U+FFFD and fail that row only, not the whole import.
        text = io.TextIOWrapper(raw, encoding="utf-8-sig", errors="replace", newline="")
        lines = _Lines(text)
        reader = csv.reader(lines)
        header = _header(path, reader)
        problems = csv.writer(errors_to) if errors_to is not None else None
        if problems is not None:
            problems.writerow(["line", "reason"])
        started = utcnow()
        for chunk in _chunks(_rows(reader, lines, header, tags, report, problems)):
            with sessions.begin() as session:
                _import_chunk(session, chunk, consent, status, started, report)
            if progress is not None:
                progress(raw.tell())
    if report.added:
        _refresh_statistics(sessions)
    if report.broken is not None:
        line, why = report.broken
        raise MailerError(
            f"{path}:{line}: {why}. Stopped there; the lines before it are imported "
            f"({report.added:,} added). Fix the file and run the import again: it is safe, "
            "addresses already on the list are skipped."
        )
    return report


def _refresh_statistics(sessions: sessionmaker) -> None:
    """Without fresh statistics PostgreSQL plans the next send's keyset pages as if the
    table were tiny, and streaming a million subscribers takes minutes, not seconds."""
    with sessions.begin() as session:
        if session.get_bind().dialect.name == "postgresql":
            session.execute(text("ANALYZE subscribers"))


def _header(path: Path, reader: Any) -> _Header:
    """Where our fields are, whatever the file's order and capitalisation."""
    try:
        names = next(reader, [])
    except csv.Error as exc:
        raise MailerError(f"{path}:1: the header cannot be read as CSV ({exc})") from exc
    if reader.line_num > 1:
        raise MailerError(f"{path}:1: the header runs on to line {reader.line_num}: an open quote?")
    index = {name.strip().lower(): at for at, name in enumerate(names) if name.strip()}
    if "email" not in index:
        found = ", ".join(index) or "nothing"
        raise MailerError(f"{path}:1: no 'email' column in the header (found {found})")
    wanted = {key: index[key] for key in ("email", "name", "tags") if key in index}
    return _Header(len(names), wanted)


def _rows(
    reader: Any,
    lines: _Lines,
    header: _Header,
    tags: tuple[str, ...],
    report: ImportReport,
    problems: Any,
) -> Iterator[_Row]:
    """The good rows. A bad one is reported by the line it starts on; where the file
    breaks off, ``report.broken`` says so and the rows end there."""
    end = reader.line_num
    while True:
        start = end + 1
        reason = None
        try:
            record = next(reader, None)
        except csv.Error as exc:  # a field longer than csv.field_size_limit()
            record, reason = [], f"cannot be read as CSV: {exc}"
        end = reader.line_num
        if record is None:
            return
        if lines.ended:
            report.broken = (start, "a quote opened on this line is never closed")
            return
        if end - start >= MAX_ROW_LINES or (reason and end > start):
            report.broken = (start, f"a row runs from here to line {end}: a quote left open?")
            return
        if not record and reason is None:
            continue  # a blank line
        report.rows += 1
        reason = reason or _check(record, header, start, end)
        if reason is None:
            try:
                email = normalize(header.field(record, "email"))
                name = clean_name(header.field(record, "name"))
            except (InvalidAddress, UnsafeHeaderValue) as exc:
                reason = str(exc)
        if reason is not None:
            report.problem(start, reason)
            if problems is not None:
                problems.writerow([start, reason])
            continue
        row_tags = list(tags)
        row_tags += [t.strip() for t in header.field(record, "tags").split(";") if t.strip()]
        yield _Row(start, email, address_hash(email), name, row_tags)


def _check(record: list[str], header: _Header, start: int, end: int) -> str | None:
    if len(record) > header.width:
        return "more fields than the header has"
    if any("\ufffd" in value for value in record):
        return "not UTF-8 text"
    if end > start:
        for key in header.index:
            if "\n" in header.field(record, key) or "\r" in header.field(record, key):
                return f"the {key} spans lines {start}–{end}; a quote left open?"
    return None


def _chunks(rows: Iterator[_Row]) -> Iterator[list[_Row]]:
    chunk: list[_Row] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) == CHUNK:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _import_chunk(
    session: Session,
    chunk: list[_Row],
    consent: Consent,
    status: Status,
    started: dt.datetime,
    report: ImportReport,
) -> None:
    postgres = session.get_bind().dialect.name == "postgresql"
    hashes = list({row.email_hash for row in chunk})
    on_list: set[str] = set()
    this_file: set[str] = set()  # added by an earlier chunk of this very import
    found = select(Subscriber.email_hash, Subscriber.source, Subscriber.created_at)
    for email_hash, source, created_at in session.execute(
        found.where(_among(Subscriber.email_hash, hashes, postgres))
    ):
        on_list.add(email_hash)
        if source == consent.source and created_at >= started:
            this_file.add(email_hash)
    suppressed = set(
        session.scalars(
            select(Suppression.email_hash).where(_among(Suppression.email_hash, hashes, postgres))
        )
    )
    new: dict[str, _Row] = {}
    for row in chunk:
        if row.email_hash in suppressed:
            report.suppressed += 1
        elif row.email_hash in new or row.email_hash in this_file:
            report.duplicates += 1  # earlier in this chunk, or in an earlier chunk of this file
        elif row.email_hash in on_list:
            report.existing += 1
        else:
            new[row.email_hash] = row
    if new:
        insert = _insert_postgresql if postgres else _insert_sqlite
        added = insert(session, list(new.values()), consent, status)
        report.added += added
        report.existing += len(new) - added  # added by someone else since the lookup


def _among(column: Any, hashes: list[str], postgres: bool) -> Any:
    """``column IN (…)``; on PostgreSQL one array parameter (``= ANY``), which it plans
    once, instead of five thousand parameters it would parse on every chunk."""
    if postgres:
        return column == any_(bindparam("hashes", hashes, type_=postgresql.ARRAY(String)))
    return column.in_(hashes)


# PostgreSQL: the chunk as four arrays, one statement; columns that are the same on
# every row go in once. The rows that come back are the rows added.
_INSERT_UNNEST = text(
    """
    INSERT INTO subscribers (email, email_hash, name, tags, status, source, created_at,
        confirmed_at, consent_at, consent_ip, consent_user_agent, consent_source, consent_text,
        soft_bounces)
    SELECT e, h, n, CAST(t AS json), :status, :source, :now, :confirmed_at, :now, '', '',
        :source, :consent_text, 0
    FROM unnest(CAST(:emails AS text[]), CAST(:hashes AS text[]), CAST(:names AS text[]),
                CAST(:tags AS text[])) AS u(e, h, n, t)
    ON CONFLICT (email_hash) DO NOTHING
    RETURNING id
    """
)


def _insert_postgresql(session: Session, rows: list[_Row], consent: Consent, status: Status) -> int:
    now = utcnow()
    params = {
        "emails": [r.email for r in rows],
        "hashes": [r.email_hash for r in rows],
        "names": [r.name for r in rows],
        "tags": [json.dumps(r.tags) for r in rows],
        "status": str(status),
        "source": consent.source,
        "consent_text": consent.text,
        "now": now,
        "confirmed_at": now if status == Status.CONFIRMED else None,
    }
    return len(session.execute(_INSERT_UNNEST, params).all())


def _insert_sqlite(session: Session, rows: list[_Row], consent: Consent, status: Status) -> int:
    """Core executemany, ON CONFLICT DO NOTHING; the row count says how many went in."""
    now = utcnow()
    confirmed_at = now if status == Status.CONFIRMED else None
    statement = sqlite.insert(Subscriber.__table__).on_conflict_do_nothing(
        index_elements=["email_hash"]
    )
    result = session.connection().execute(
        statement,
        [
            {
                "email": r.email,
                "email_hash": r.email_hash,
                "name": r.name,
                "status": str(status),
                "tags": r.tags,
                "source": consent.source,
                "created_at": now,
                "confirmed_at": confirmed_at,
                "consent_at": now,
                "consent_ip": "",
                "consent_user_agent": "",
                "consent_source": consent.source,
                "consent_text": consent.text,
                "soft_bounces": 0,
            }
            for r in rows
        ],
    )
    return result.rowcount
