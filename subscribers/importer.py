"""CSV import that streams: a million rows without loading the file, safe to run twice.

The header says which tool wrote the file (``subscribers.sources``: Mailchimp, Substack,
Buttondown, listmonk, our own export, or any file with an email column) and the first
line says its delimiter (``,``, ``;`` or a tab). Each row is checked here, in Python; the
good ones stream into the database's staging table and are written there by a few
set-based statements (``subscribers.staging``). Bad rows are skipped and reported with
their line number and reason; suppressed and unsubscribed addresses are reported, never
brought back, and rows that say an address left the old tool suppress it. A file that
breaks off (a quote left open swallows the rows after it) stops the import there,
saying so, after the rows before it are imported.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any, Protocol, TextIO

from sqlalchemy import Engine
from sqlalchemy.orm import sessionmaker

from mailer.errors import InvalidAddress, MailerError, UnsafeHeaderValue
from mailer.headers import header_text_problem
from mailer.store.dialect import analyze
from subscribers.addresses import address_hash, normalize
from subscribers.models import Status, Subscriber
from subscribers.sources import (
    GONE,
    PENDING,
    Layout,
    RowError,
    layout_for,
    outcome_of,
    parse_ip,
    parse_time,
    split_tags,
)
from subscribers.spreadsheet import as_text, from_text
from subscribers.staging import StagedRow, Staging
from subscribers.store import Consent

__all__ = ["ImportReport", "import_csv"]

CHUNK = 5000  # rows staged between two progress reports
KEPT_PROBLEMS = 1000  # bad rows kept for the report; all of them go to the errors file
# A subscriber is one line; a quoted field (a postal address, a note) may take a few more.
# A row longer than this has swallowed the rows after a quote left open.
MAX_ROW_LINES = 10
DELIMITERS = (",", ";", "\t")


@dataclass
class ImportReport:
    rows: int = 0
    added: int = 0
    existing: int = 0
    duplicates: int = 0  # the same address again within this file
    suppressed: int = 0
    bad: int = 0
    gone: int = 0  # rows saying the address left the old tool: suppressed here too
    taken_off: int = 0  # subscribers already here whom those rows took off the list
    mapping: str = ""  # which tool's export, and which column went where
    problems: list[tuple[int, str]] = field(default_factory=list)  # (line, reason)
    broken: tuple[int, str] | None = None  # (line, why) where the file broke off

    def problem(self, line: int, reason: str) -> None:
        self.bad += 1
        if len(self.problems) < KEPT_PROBLEMS:
            self.problems.append((line, reason))


class Writable(Protocol):
    """Where the bad rows go: an open text file, or anything with its ``write``."""

    def write(self, text: str, /) -> int: ...


class _Lines:
    """The file's lines, for the csv reader, the first one (read for its delimiter) again
    first. ``ended`` turns true when the reader asks past the last one: the record it
    returns then was closed by the end of the file, not by a closing quote (the reader
    accepts that without a word)."""

    def __init__(self, first: str, rest: TextIO) -> None:
        self.first = first
        self.rest = rest
        self.ended = False

    def __iter__(self) -> Iterator[str]:
        yield self.first
        yield from self.rest
        self.ended = True


def import_csv(
    path: Path,
    sessions: sessionmaker,
    consent: Consent,
    *,
    status: Status = Status.CONFIRMED,
    tags: tuple[str, ...] = (),
    progress: Callable[[int], None] | None = None,
    errors_to: Writable | None = None,
) -> ImportReport:
    """Import ``path``; ``progress`` gets the bytes read so far after each chunk, and
    ``errors_to`` a CSV of the bad rows (line, reason), written from the first one on.

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
        text_in = io.TextIOWrapper(raw, encoding="utf-8-sig", errors="replace", newline="")
        first = text_in.readline()
        lines = _Lines(first, text_in)
        reader = csv.reader(lines, delimiter=_delimiter(first))
        layout = _header(path, reader)
        report.mapping = layout.describe()
        problems = _Problems(errors_to, report)
        rows = _rows(reader, lines, layout, status, tags, report, problems)
        with _engine(sessions).connect() as connection:
            with Staging(connection) as staging:
                for chunk in _chunks(rows):
                    staging.add(chunk)
                    if progress is not None:
                        progress(raw.tell())
                counts = staging.finish(
                    consent.source, consent.text, f"{consent.source}: {layout.tool}"
                )
            connection.commit()
    report.gone, report.taken_off = counts.gone, counts.taken_off
    report.suppressed, report.existing = counts.suppressed, counts.existing
    report.added, report.duplicates = counts.added, counts.repeated
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


def _engine(sessions: sessionmaker) -> Engine:
    """The engine itself: the staging table lives as long as one connection, across the
    commits of an import on SQLite."""
    with sessions() as session:
        return session.get_bind().engine


def _refresh_statistics(sessions: sessionmaker) -> None:
    """Without fresh statistics PostgreSQL plans the next send's keyset pages as if the
    table were tiny, and streaming a million subscribers takes minutes, not seconds."""
    with sessions.begin() as session:
        analyze(session.connection(), Subscriber.metadata.tables[Subscriber.__tablename__])


def _delimiter(first: str) -> str:
    """The delimiter the header line uses most, outside quotes (a comma when it has none:
    a file of addresses alone)."""
    unquoted = first.split('"')[::2]
    counts = {d: sum(part.count(d) for part in unquoted) for d in DELIMITERS}
    best = max(DELIMITERS, key=lambda d: counts[d])
    return best if counts[best] else ","


def _header(path: Path, reader: Any) -> Layout:
    """Which tool's export this is, and where our fields are in it."""
    try:
        names: list[str] = next(reader, [])
    except csv.Error as exc:
        raise MailerError(f"{path}:1: the header cannot be read as CSV ({exc})") from exc
    if reader.line_num > 1:
        raise MailerError(f"{path}:1: the header runs on to line {reader.line_num}: an open quote?")
    layout = layout_for(names)
    if layout is None:
        found = ", ".join(repr(name.strip()[:40]) for name in names if name.strip()) or "nothing"
        raise MailerError(f"{path}:1: no 'email' column in the header (found {found})")
    return layout


class _Problems:
    """Bad rows: counted and kept for the report, and every one written to the errors
    file (its header with the first), each cell safe for a spreadsheet."""

    def __init__(self, out: Writable | None, report: ImportReport) -> None:
        self.writer = csv.writer(out) if out is not None else None
        self.report = report

    def __call__(self, line: int, reason: str) -> None:
        if self.writer is not None:
            if not self.report.bad:
                self.writer.writerow(["line", "reason"])
            self.writer.writerow([line, as_text(reason)])
        self.report.problem(line, reason)


def _rows(
    reader: Any,
    lines: _Lines,
    layout: Layout,
    status: Status,
    tags: tuple[str, ...],
    report: ImportReport,
    problem: _Problems,
) -> Iterator[StagedRow]:
    """The good rows, staged form. A bad one is reported by the line it starts on; where
    the file breaks off, ``report.broken`` says so and the rows end there."""
    row = _row_reader(layout, status == Status.PENDING, tags)
    end = reader.line_num
    while True:
        start = end + 1
        try:
            record = next(reader, None)
        except csv.Error as exc:  # a field longer than csv.field_size_limit()
            end = reader.line_num
            if end > start:
                report.broken = (start, f"a row runs from here to line {end}: a quote left open?")
                return
            report.rows += 1
            problem(start, f"cannot be read as CSV: {exc}")
            continue
        end = reader.line_num
        if record is None:
            return
        if lines.ended:
            report.broken = (start, "a quote opened on this line is never closed")
            return
        if end - start >= MAX_ROW_LINES:
            report.broken = (start, f"a row runs from here to line {end}: a quote left open?")
            return
        if not record:
            continue  # a blank line
        report.rows += 1
        try:
            yield row(record, start, end)
        except (InvalidAddress, UnsafeHeaderValue, RowError) as exc:
            problem(start, str(exc))


def _cell(record: list[str], at: int | None) -> str:
    """The cell, as it was before an export made it safe for spreadsheets."""
    if at is None or at >= len(record):
        return ""
    cell = record[at]
    return from_text(cell) if cell[:1] == "'" else cell


def _row_reader(
    layout: Layout, pending: bool, tags: tuple[str, ...]
) -> Callable[[list[str], int, int], StagedRow]:
    """The function that makes one good row, staged, of a record that starts on line
    ``start`` and ends on ``end``; ``RowError`` (or the address's or name's own error)
    says why a row is not. The layout is read once here, not for each of a million rows."""
    width = len(layout.columns)
    email_at, names, tags_at = layout.email, layout.names, layout.tags
    name_at = names[0] if len(names) == 1 else None
    given = list(tags)
    spans = [("email", layout.email), *(("name", at) for at in names), ("tags", layout.tags)]
    times = any(
        at is not None for at in (layout.consent_at, layout.confirmed_at, layout.consent_ip)
    )

    def row(record: list[str], start: int, end: int) -> StagedRow:
        if len(record) > width:
            raise RowError("more fields than the header has")
        joined = "".join(record)
        if "\ufffd" in joined:
            raise RowError("not UTF-8 text")
        raw = record
        if len(record) < width or "'" in joined:  # every cell as _cell reads it
            record = [_cell(record, at) for at in range(width)]
        if end > start:
            for key, at in spans:
                value = record[at] if at is not None else ""
                if "\n" in value or "\r" in value:
                    raise RowError(f"the {key} spans lines {start}–{end}; a quote left open?")
        email = normalize(record[email_at])
        email_hash = address_hash(email)
        outcome = outcome_of(layout, raw)
        if outcome in GONE:  # only the address matters: it is suppressed, whatever the rest says
            return (start, email, email_hash, "", "[]", None, None, "", outcome)
        if pending:
            outcome = PENDING
        if name_at is not None:
            name = record[name_at].strip()
        else:
            name = " ".join(part for at in names if (part := record[at].strip()))
        reason = header_text_problem(name)
        if reason:
            raise UnsafeHeaderValue("name", reason)
        row_tags = given if tags_at is None else given + split_tags(record[tags_at])
        if not times:
            return (start, email, email_hash, name, _json_list(row_tags), None, None, "", outcome)
        consent_at = confirmed_at = None
        ip = ""
        if layout.consent_at is not None:
            at = layout.consent_at
            consent_at = parse_time(record[at], layout.columns[at])
        if layout.confirmed_at is not None:
            at = layout.confirmed_at
            confirmed_at = parse_time(record[at], layout.columns[at])
        if layout.consent_ip is not None:
            ip = parse_ip(record[layout.consent_ip], layout.columns[layout.consent_ip])
        tags_json = _json_list(row_tags)
        return (start, email, email_hash, name, tags_json, consent_at, confirmed_at, ip, outcome)

    return row


# What JSON would escape in a string: quotes, backslashes, control characters.
_NEEDS_ESCAPING = re.compile(r'["\\\x00-\x1f]')


def _json_list(tags: list[str]) -> str:
    """``json.dumps(tags)``, written directly when no tag needs escaping (nearly always):
    the encoder's call costs more than the row's other checks together."""
    if not tags:
        return "[]"
    if _NEEDS_ESCAPING.search("".join(tags)):
        return json.dumps(tags, ensure_ascii=False)
    joined = '", "'.join(tags)
    return f'["{joined}"]'


def _chunks(rows: Iterator[StagedRow]) -> Iterator[list[StagedRow]]:
    while chunk := list(islice(rows, CHUNK)):
        yield chunk
