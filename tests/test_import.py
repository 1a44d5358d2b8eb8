"""CSV import on SQLite and on the real PostgreSQL server alike.

An operator's old list is messy: a BOM, a header in its own order and capitalisation,
bad rows, the same person twice, people who already left. The import must take the good
rows, report every bad one by its physical line, never bring a suppressed address back,
and be safe to run twice, whatever the chunk size.
"""

from __future__ import annotations

import csv
import io
import threading
import time

import pytest
from sqlalchemy import select, text

import subscribers.importer
import subscribers.staging
from mailer.clock import utcnow
from mailer.errors import MailerError
from subscribers import store
from subscribers.importer import import_csv
from subscribers.models import Status, Subscriber

CONSENT = store.Consent(source="import:old-list.csv", text="Signed up at the 2025 conference")
LONG_NAME = "x" * 201

# Physical line numbers on the right; the quoted name spans lines 12 and 13.
MESSY = (
    b"\xef\xbb\xbfTags,NAME,Email\r\n"  # 1  BOM, another order and capitalisation
    b"news;tech,Ann,ann@example.com\r\n"  # 2  added
    b",Bob,not-an-email\r\n"  # 3  bad: invalid
    b",Empty,\r\n"  # 4  bad: empty email
    b"a,Carl,carl@example.com,extra\r\n"  # 5  bad: more fields than the header
    b",Ren\xe9,rene@example.com\r\n"  # 6  bad: Latin-1, not UTF-8
    b"," + LONG_NAME.encode() + b",long@example.com\r\n"  # 7  bad: name too long
    b",Ann again,ANN@Example.COM\r\n"  # 8  duplicate of line 2
    b",Old,Old@EXAMPLE.com\r\n"  # 9  already on the list
    b",Gone,GONE@example.com\r\n"  # 10 unsubscribed earlier
    b",Erased,Erased@example.com\r\n"  # 11 erased earlier
    b'" tagA ; ;tagB ","Dana\r\nSmith",dana@example.com\r\n'  # 12-13 bad: a line break
    b",Eve,eve@\r\n"  # 14 bad: invalid
    b'" vip ; ;club ",Finn,finn@example.com\r\n'  # 15 added
    b"\r\n"  # 16 blank, skipped
    b",Gail,gail@EXAMPLE.com\r\n"  # 17 added
    b"x,OnlyTwo\r\n"  # 18 bad: no email field at all
)
PROBLEMS = [
    (3, "not a valid email address"),
    (4, "the email address is empty"),
    (5, "more fields than the header has"),
    (6, "not UTF-8 text"),
    (7, "name: longer than 200 characters"),
    (12, "the name spans lines 12–13"),
    (14, "not a valid email address"),
    (18, "the email address is empty"),
]


@pytest.fixture
def prepared(sessions):
    """A list that already holds one live, one unsubscribed and one erased address."""
    form = store.Consent(source="form", text="form wording")
    with sessions.begin() as session:
        store.add(session, "old@example.com", form, name="Old", status=Status.CONFIRMED)
        gone = store.add(session, "gone@example.com", form, status=Status.CONFIRMED).subscriber
        store.unsubscribe(session, gone, how="test")
        store.add(session, "erased@example.com", form, status=Status.CONFIRMED)
        store.erase(session, "erased@example.com")
    return sessions


def _snapshot(sessions):
    with sessions() as session:
        rows = session.scalars(select(Subscriber).order_by(Subscriber.id))
        return [
            {k: v for k, v in row.to_dict().items() if k not in ("created_at", "consent_at")}
            for row in rows
        ]


def _check_problems(problems):
    assert [line for line, _ in problems] == [line for line, _ in PROBLEMS]
    for (_, reason), (_, expected) in zip(problems, PROBLEMS, strict=True):
        assert expected in reason


def test_messy_file(prepared, tmp_path):
    path = tmp_path / "old-list.csv"
    path.write_bytes(MESSY)
    errors = io.StringIO()
    before = utcnow()
    report = import_csv(path, prepared, CONSENT, tags=("imported",), errors_to=errors)
    after = utcnow()

    assert (report.rows, report.added, report.existing) == (15, 3, 1)
    assert (report.duplicates, report.suppressed, report.bad) == (1, 2, 8)
    _check_problems(report.problems)
    written = list(csv.reader(io.StringIO(errors.getvalue())))
    assert written[0] == ["line", "reason"]
    assert [(int(line), reason) for line, reason in written[1:]] == report.problems

    with prepared() as session:
        by_email = {s.email: s for s in session.scalars(select(Subscriber))}
        assert set(by_email) == {
            "old@example.com",
            "gone@example.com",
            "ann@example.com",
            "finn@example.com",
            "gail@example.com",
        }
        assert by_email["ann@example.com"].tags == ["imported", "news", "tech"]
        assert by_email["ann@example.com"].name == "Ann"  # the first of the two rows wins
        assert by_email["finn@example.com"].tags == ["imported", "vip", "club"]
        assert by_email["gail@example.com"].tags == ["imported"]
        for email in ("ann@example.com", "finn@example.com"):
            imported = by_email[email]
            assert imported.status == Status.CONFIRMED
            assert imported.confirmed_at is not None
            assert imported.source == CONSENT.source
            assert imported.consent_source == CONSENT.source
            assert imported.consent_text == CONSENT.text
            # Stored as the moment of the import, and read back as the same aware time.
            assert before <= imported.created_at <= after
            assert imported.consent_at == imported.confirmed_at == imported.created_at
        # Never brought back, never touched.
        assert by_email["gone@example.com"].status == Status.UNSUBSCRIBED
        assert store.find(session, "erased@example.com") is None
        assert by_email["old@example.com"].source == "form"
        assert by_email["old@example.com"].tags == []


def test_importing_twice_adds_nothing_and_loses_nothing(prepared, tmp_path):
    path = tmp_path / "old-list.csv"
    path.write_bytes(MESSY)
    first = import_csv(path, prepared, CONSENT, tags=("imported",))
    before = _snapshot(prepared)
    second = import_csv(path, prepared, CONSENT, tags=("imported",))
    assert _snapshot(prepared) == before
    assert first.added == 3
    assert (second.rows, second.added, second.suppressed, second.bad) == (15, 0, 2, 8)
    # Every good row is on the list now (whether the repeat of Ann counts as a duplicate
    # or as already on the list, it is counted once and not added).
    assert second.existing + second.duplicates == 5
    assert second.existing >= 4
    _check_problems(second.problems)


def test_the_errors_file_gets_every_bad_row_beyond_those_kept(prepared, tmp_path, monkeypatch):
    monkeypatch.setattr(subscribers.importer, "KEPT_PROBLEMS", 2)
    path = tmp_path / "old-list.csv"
    path.write_bytes(MESSY)
    errors_path = tmp_path / "errors.csv"
    with errors_path.open("w", newline="", encoding="utf-8") as errors:
        report = import_csv(path, prepared, CONSENT, errors_to=errors)
    assert report.bad == 8
    assert report.problems == report.problems[:2] and len(report.problems) == 2
    with errors_path.open(newline="", encoding="utf-8") as errors:
        written = list(csv.reader(errors))[1:]
    _check_problems([(int(line), reason) for line, reason in written])


@pytest.mark.parametrize(
    "content", ["name,mail\nAnn,ann@example.com\n", "", "\ufeffName;Mail\nAnn;a@example.com\n"]
)
def test_a_file_without_an_email_column_is_refused(sessions, tmp_path, content):
    path = tmp_path / "no-email.csv"
    path.write_text(content, "utf-8")
    with pytest.raises(MailerError, match="email") as caught:
        import_csv(path, sessions, CONSENT)
    assert str(caught.value).startswith(f"{path}:1:")
    with sessions() as session:
        assert session.scalars(select(Subscriber)).all() == []


def test_a_missing_file_is_a_mailer_error(sessions, tmp_path):
    with pytest.raises(MailerError, match=r"missing\.csv"):
        import_csv(tmp_path / "missing.csv", sessions, CONSENT)


def test_chunks(prepared, tmp_path, monkeypatch):
    monkeypatch.setattr(subscribers.importer, "CHUNK", 3)
    monkeypatch.setattr(subscribers.staging, "SLICE", 2)  # SQLite's committed slices
    lines = [
        "email,name",
        "a@example.com,A",  # chunk 1
        "b@example.com,B",
        "c@example.com,C",
        "A@EXAMPLE.COM,A2",  # chunk 2: repeats a from chunk 1
        "d@example.com,D",
        "old@example.com,Old",
        "B@example.com,B2",  # chunk 3: repeats b from chunk 1
        "e@example.com,E",
        "d@EXAMPLE.com,D2",  # repeats d from chunk 2
        "gone@example.com,Gone",  # chunk 4
        "f@example.com,F",
        "broken",
    ]
    path = tmp_path / "chunked.csv"
    path.write_text("\n".join(lines) + "\n", "utf-8")
    seen = []
    report = import_csv(path, prepared, CONSENT, status=Status.PENDING, progress=seen.append)
    assert (report.rows, report.added, report.existing) == (12, 6, 1)
    assert (report.duplicates, report.suppressed, report.bad) == (3, 1, 1)
    assert [line for line, _ in report.problems] == [13]
    assert len(seen) == 4 and seen[-1] == path.stat().st_size
    with prepared() as session:
        names = {s.email: (s.name, s.status) for s in session.scalars(select(Subscriber))}
    for letter in "abcdef":
        assert names[f"{letter}@example.com"] == (letter.upper(), Status.PENDING)
    assert names["gone@example.com"][1] == Status.UNSUBSCRIBED

    again = import_csv(path, prepared, CONSENT, status=Status.PENDING)
    assert again.added == 0
    assert again.existing + again.duplicates == 10 and again.suppressed == 1


def test_a_first_import_into_an_empty_list(sessions, tmp_path, monkeypatch):
    """Nothing to count against: the staged rows' own count, and the last of them added."""
    monkeypatch.setattr(subscribers.staging, "SLICE", 2)  # SQLite's slices end at the last line
    path = tmp_path / "first.csv"
    path.write_text("email\na@example.com\nb@example.com\nA@EXAMPLE.COM\nc@example.com\n")
    report = import_csv(path, sessions, CONSENT)
    assert (report.rows, report.added, report.duplicates) == (4, 3, 1)
    assert (report.existing, report.suppressed, report.bad) == (0, 0, 0)
    with sessions() as session:
        emails = set(session.scalars(select(Subscriber.email)))
    assert emails == {"a@example.com", "b@example.com", "c@example.com"}


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_sign_up_racing_the_import_is_kept_and_the_import_completes(sessions, tmp_path):
    """PostgreSQL's one-statement insert checks the list itself; a sign-up it could not see
    yet (committed while the insert waits on its row) must not fail the import."""
    path = tmp_path / "list.csv"
    path.write_text("email\na@example.com\nb@example.com\nc@example.com\n", "utf-8")
    form = store.Consent(source="form", text="form wording")
    signing_up = sessions()
    store.add(signing_up, "b@example.com", form, status=Status.CONFIRMED)
    signing_up.flush()  # b's row is in the unique index, not yet committed
    outcome: list[object] = []
    importing = threading.Thread(
        target=lambda: outcome.append(_run(lambda: import_csv(path, sessions, CONSENT)))
    )
    importing.start()
    with sessions() as watcher:
        waiting = text(
            "SELECT COUNT(*) FROM pg_stat_activity "
            "WHERE wait_event_type = 'Lock' AND query LIKE '%INSERT INTO subscribers%'"
        )
        while not watcher.execute(waiting).scalar() and importing.is_alive():
            watcher.rollback()
            time.sleep(0.01)
    signing_up.commit()
    signing_up.close()
    importing.join()
    report = outcome[0]
    assert isinstance(report, subscribers.importer.ImportReport), report
    assert (report.rows, report.added, report.existing, report.duplicates) == (3, 2, 0, 1)
    with sessions() as session:
        by_email = {s.email: s.source for s in session.scalars(select(Subscriber))}
    assert by_email == {"a@example.com": CONSENT.source, "b@example.com": "form",
                        "c@example.com": CONSENT.source}  # fmt: skip


def _run(call):
    """What ``call`` returned, or the exception it raised."""
    try:
        return call()
    except Exception as exc:
        return exc
