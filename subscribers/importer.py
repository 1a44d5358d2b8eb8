"""CSV import that streams: a million rows without loading the file, safe to run twice.

Rows go in chunks, each one short transaction: validate, drop duplicates, look the
chunk's addresses up in the list and the suppression list at once, insert what is
new (``ON CONFLICT DO NOTHING``, so a form submission racing the import is fine).
Bad rows are skipped and reported with their line number and reason; suppressed and
unsubscribed addresses are reported, never brought back.
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

from mailer.errors import InvalidAddress, MailerError
from subscribers.addresses import address_hash, normalize
from subscribers.models import Status, Subscriber, Suppression, utcnow
from subscribers.store import Consent

__all__ = ["ImportReport", "import_csv"]

CHUNK = 5000
KEPT_PROBLEMS = 1000  # bad rows kept for the report; all of them go to the errors file
MAX_NAME = 200


@dataclass
class ImportReport:
    rows: int = 0
    added: int = 0
    existing: int = 0
    duplicates: int = 0  # the same address again within this file
    suppressed: int = 0
    bad: int = 0
    problems: list[tuple[int, str]] = field(default_factory=list)  # (line, reason)

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
    """Import ``path``; ``progress`` gets the bytes read so far after each chunk."""
    report = ImportReport()
    try:
        raw = path.open("rb")
    except OSError as exc:
        raise MailerError(f"{path}: cannot read the file ({exc.strerror})") from exc
    with raw:
        # Undecodable bytes become U+FFFD and fail that row only, not the whole import.
        text = io.TextIOWrapper(raw, encoding="utf-8-sig", errors="replace", newline="")
        reader = csv.DictReader(text)
        columns = _columns(path, reader.fieldnames)
        problems = csv.writer(errors_to) if errors_to is not None else None
        if problems is not None:
            problems.writerow(["line", "reason"])
        started = utcnow()
        for chunk in _chunks(_rows(reader, columns, tags, report, problems)):
            with sessions.begin() as session:
                _import_chunk(session, chunk, consent, status, started, report)
            if progress is not None:
                progress(raw.tell())
    if report.added:
        _refresh_statistics(sessions)
    return report


def _refresh_statistics(sessions: sessionmaker) -> None:
    """Without fresh statistics PostgreSQL plans the next send's keyset pages as if the
    table were tiny, and streaming a million subscribers takes minutes, not seconds."""
    with sessions.begin() as session:
        if session.get_bind().dialect.name == "postgresql":
            session.execute(text("ANALYZE subscribers"))


def _columns(path: Path, fieldnames: Any) -> dict[str, str]:
    """Our field → the file's header, whatever its order and capitalisation."""
    header = {str(name).strip().lower(): name for name in fieldnames or () if name}
    if "email" not in header:
        found = ", ".join(header) or "nothing"
        raise MailerError(f"{path}:1: no 'email' column in the header (found {found})")
    return {key: header[key] for key in ("email", "name", "tags") if key in header}


def _rows(
    reader: csv.DictReader,
    columns: dict[str, str],
    tags: tuple[str, ...],
    report: ImportReport,
    problems: Any,
) -> Iterator[_Row]:
    for record in reader:
        report.rows += 1
        line = reader.line_num
        reason = _check(record, columns)
        if reason is None:
            try:
                email = normalize(record[columns["email"]] or "")
            except InvalidAddress as exc:
                reason = str(exc)
        if reason is not None:
            report.problem(line, reason)
            if problems is not None:
                problems.writerow([line, reason])
            continue
        name = " ".join((record[columns["name"]] or "").split()) if "name" in columns else ""
        row_tags = list(tags)
        if "tags" in columns:
            row_tags += [t.strip() for t in (record[columns["tags"]] or "").split(";") if t.strip()]
        yield _Row(line, email, address_hash(email), name, row_tags)


def _check(record: dict[str, Any], columns: dict[str, str]) -> str | None:
    if None in record:
        return "more fields than the header has"
    values = [value for value in record.values() if isinstance(value, str)]
    if any("\ufffd" in value for value in values):
        return "not UTF-8 text"
    name = record.get(columns["name"]) if "name" in columns else ""
    if name and len(name) > MAX_NAME:
        return f"the name is longer than {MAX_NAME} characters"
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
