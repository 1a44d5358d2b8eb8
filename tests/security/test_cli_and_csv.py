"""Subscriber data as an attacker would send it: names bound for mail headers, cells a
spreadsheet would run, bytes a terminal would obey, CSV files that break off."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import select
from sqlalchemy.orm import sessionmaker

import mailer.cli
import subscribers.importer
from mailer.cli import Context, main
from mailer.cli.progress import CampaignBar
from mailer.config import Settings
from mailer.errors import MailerError, UnsafeHeaderValue
from mailer.store.ledger import Campaign
from subscribers import store
from subscribers.addresses import address_hash
from subscribers.importer import import_csv
from subscribers.models import Status, Subscriber

CONSENT = store.Consent(source="test", text="yes")
ENCODED_WORD = "=?utf-8?q?Eve=0D=0ABcc:_all@example.org?="
UNSAFE_NAMES = [
    ENCODED_WORD,
    "Eve\r\nBcc: all@example.org",
    "Eve\x1b[2J",
    "Eve\x00",
    "Eve\u2028Bcc",
    "E" * 201,
]
# What a terminal acts on: ESC, BEL, the C1 CSI (ESC[ in one byte), a bidi override.
TERMINAL_CONTROLS = ("\x1b", "\x07", "\x9b", "\u202e")
HOSTILE = "Mallory\x1b[2J\x1b]0;pwned\x07\x9b31m\u202egnp.exe [bold]loud[/bold]"


@pytest.fixture
def cli(database_url: str, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Result]:
    """`mailer ARGS…` in this process, on the test's database; the connections each command
    opened are closed after it (a real process leaves that to its exit)."""
    made: list[Context] = []

    def context(settings: Settings) -> Context:
        made.append(Context(settings))
        return made[-1]

    monkeypatch.setattr(mailer.cli, "Context", context)

    def run(*args: str) -> Result:
        env = {"MAILER_DATABASE_URL": database_url, "COLUMNS": "300"}
        try:
            return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)
        finally:
            while made:
                made.pop().close()

    return run


def names(sessions: sessionmaker) -> dict[str, str]:
    with sessions() as session:
        return {s.email: s.name for s in session.scalars(select(Subscriber))}


def insert_raw(sessions: sessionmaker, email: str, **columns: str) -> None:
    """A subscriber straight into the table, as rows written before the checks may be."""
    with sessions.begin() as session:
        row = {"name": "", "status": Status.CONFIRMED, "source": "form", **columns}
        session.add(Subscriber(email=email, email_hash=address_hash(email), tags=[], **row))


# 1. Names are checked where they come in.


@pytest.mark.parametrize("name", UNSAFE_NAMES)
def test_store_add_refuses_a_name_that_could_not_go_into_a_header(sessions, name) -> None:
    with sessions.begin() as session, pytest.raises(UnsafeHeaderValue) as caught:
        store.add(session, "eve@example.org", CONSENT, name=name)
    assert caught.value.field == "name"
    assert names(sessions) == {}


def test_store_add_strips_the_name_before_checking_it(sessions) -> None:
    with sessions.begin() as session:
        store.add(session, "ann@example.org", CONSENT, name=" \t Ann Lee \r\n")
    assert names(sessions) == {"ann@example.org": "Ann Lee"}


def test_cli_add_refuses_an_unsafe_name_in_one_line(cli) -> None:
    args = ("subscribers", "add", "eve@example.org", "--consent-source", "t")
    result = cli(*args, "--name", ENCODED_WORD)
    assert result.exit_code == 2
    assert result.stderr.startswith("error: name: ") and "encoded word" in result.stderr
    assert result.stderr.count("\n") == 1 and result.stdout == ""


def test_import_reports_unsafe_names_row_by_row_and_goes_on(sessions, tmp_path) -> None:
    path = tmp_path / "list.csv"
    path.write_text(
        "email,name\n"
        "ann@example.org,  Ann  \n"  # 2  added, stripped
        f"eve@example.org,{ENCODED_WORD}\n"  # 3  bad
        "esc@example.org,Esc\x1b[2J\n"  # 4  bad
        "bob@example.org,Bob\n",  # 5  added
        "utf-8",
    )
    report = import_csv(path, sessions, CONSENT)
    assert (report.rows, report.added, report.bad) == (4, 2, 2)
    assert [line for line, _ in report.problems] == [3, 4]
    assert report.problems[0][1] == "name: contains an RFC 2047 encoded word (=?…?=)"
    assert report.problems[1][1] == "name: contains the control character U+001B"
    assert names(sessions) == {"ann@example.org": "Ann", "bob@example.org": "Bob"}


# 2. CSV export: no cell a spreadsheet would run.

FORMULA_NAME = '=HYPERLINK("http://x","y")'


def test_export_neutralises_cells_a_spreadsheet_would_run(cli, sessions) -> None:
    with sessions.begin() as session:
        for email, name in (
            ("ann@example.org", FORMULA_NAME),
            ("+tag@example.org", "@SUM(A1)"),
            ("-a@example.org", "-2+3"),
            ("=1+1@example.org", "Plain"),
        ):
            store.add(session, email, CONSENT, name=name, status=Status.CONFIRMED)
    insert_raw(sessions, "tab@example.org", name="\tTab", source="\rimport")

    result = cli("subscribers", "export", "--out", "out.csv")
    assert result.exit_code == 0, result.output
    with open("out.csv", newline="", encoding="utf-8") as file:
        rows = list(csv.DictReader(file))
    got = {(row["email"], row["name"], row["source"]) for row in rows}
    assert got == {
        ("ann@example.org", "'" + FORMULA_NAME, "test"),
        ("'+tag@example.org", "'@SUM(A1)", "test"),
        ("'-a@example.org", "'-2+3", "test"),
        ("'=1+1@example.org", "Plain", "test"),
        ("tab@example.org", "'\tTab", "'\rimport"),
    }

    raw = cli("subscribers", "export", "--raw")
    assert raw.exit_code == 0, raw.output
    rows = list(csv.DictReader(io.StringIO(raw.stdout, newline="")))
    assert {row["email"]: row["name"] for row in rows}["ann@example.org"] == FORMULA_NAME
    assert {row["email"] for row in rows} >= {"+tag@example.org", "-a@example.org"}


def test_an_export_imports_back_as_the_values_it_was_made_from(cli, sessions) -> None:
    """The leading ' an export adds is taken off by an import: no '-a@… newcomer."""
    with sessions.begin() as session:
        store.add(session, "-a@example.org", CONSENT, name="-2+3", status=Status.CONFIRMED)
        store.add(session, "=b@example.org", CONSENT, name="'Quoted", status=Status.CONFIRMED)
    assert cli("subscribers", "export", "--out", "out.csv").exit_code == 0
    with sessions.begin() as session:
        for email in ("-a@example.org", "=b@example.org"):
            store.remove(session, email)
    result = cli("subscribers", "import", "out.csv", "--consent-source", "round trip")
    assert result.exit_code == 0, result.output
    assert names(sessions) == {"-a@example.org": "-2+3", "=b@example.org": "'Quoted"}


# 3. Nothing from outside reaches the terminal as control characters or markup.


def assert_safe_for_a_terminal(output: str) -> None:
    assert not [c for c in TERMINAL_CONTROLS if c in output], repr(output)


def test_subscriber_commands_print_no_terminal_controls(cli, sessions) -> None:
    insert_raw(
        sessions,
        "mallory@example.org",
        name=HOSTILE,
        source="form\x1b[31m",
        consent_user_agent="Agent\x1b]8;;http://x\x07",
        consent_ip="203.0.113.9\x07",
    )
    with sessions.begin() as session:
        mallory = store.find(session, "mallory@example.org")
        store.record(session, mallory.id, "subscribed", note="\x1b[2J")
    for args in (("list",), ("show", "mallory@example.org"), ("count",)):
        result = cli("subscribers", *args)
        assert result.exit_code == 0, result.output
        assert_safe_for_a_terminal(result.output)
    shown = cli("subscribers", "show", "mallory@example.org").stdout
    assert "Mallory\\u001b[2J" in shown and "[bold]loud[/bold]" in shown  # visible, not run

    exported = cli("subscribers", "gdpr-export", "mallory@example.org")
    assert exported.exit_code == 0, exported.output
    assert_safe_for_a_terminal(exported.stdout)
    assert json.loads(exported.stdout)["subscriber"]["name"] == HOSTILE  # still faithful JSON


def test_campaign_commands_print_no_terminal_controls(cli, sessions) -> None:
    with sessions.begin() as session:
        session.add(
            Campaign(
                slug="weekly\x1b[2J",
                subject=f"Weekly {HOSTILE}",
                edition={},
                backend="sendgrid",
                status="failed",
                last_error="550 \x1b[31mno such user\x07 [red]x[/red]",
            )
        )
    for args in (("campaigns", "list"), ("campaigns", "show", "1"), ("stats",), ("stats", "1")):
        result = cli(*args)
        assert result.exit_code == 0, result.output
        assert_safe_for_a_terminal(result.output)
    shown = cli("campaigns", "show", "1").stdout
    assert "[red]x[/red]" in shown


def test_import_problems_print_no_terminal_controls(cli, tmp_path) -> None:
    path = tmp_path / "list\x1b[2J.csv"
    path.write_text("email,name\nnot-an-address\x1b[2J\u202e,Eve\n", "utf-8")
    result = cli("subscribers", "import", str(path), "--consent-source", "t")
    assert result.exit_code == 0, result.output
    assert "line 2: " in result.stdout
    assert_safe_for_a_terminal(result.output)


# 4. CSV files that break off: bad rows are reported, a broken file is a clear stop.


def test_an_over_long_field_is_a_bad_row_not_a_crash(sessions, tmp_path) -> None:
    path = tmp_path / "list.csv"
    huge = "x" * (csv.field_size_limit() + 1)
    path.write_text(
        f"email,name\nann@example.org,Ann\nbig@example.org,{huge}\nbob@example.org,Bob\n",
        "utf-8",
    )
    report = import_csv(path, sessions, CONSENT)
    assert (report.rows, report.added, report.bad) == (3, 2, 1)
    assert report.problems[0][0] == 3 and "field larger than field limit" in report.problems[0][1]


def _rows(count: int, start: int = 0) -> str:
    return "".join(f"r{i}@example.org,R{i}\n" for i in range(start, start + count))


def test_an_unclosed_quote_at_the_end_stops_and_a_rerun_is_safe(sessions, tmp_path, monkeypatch):
    monkeypatch.setattr(subscribers.importer, "CHUNK", 2)
    path = tmp_path / "list.csv"
    # Line 7 opens a quote nobody closes: the five rows after it would become its name.
    broken = "email,name\n" + _rows(5) + 'eve@example.org,"Eve\n' + _rows(5, start=5)
    path.write_text(broken, "utf-8")
    with pytest.raises(MailerError) as caught:
        import_csv(path, sessions, CONSENT)
    message = str(caught.value)
    assert message.startswith(f"{path}:7: ") and "quote" in message
    assert "(5 added)" in message and "run the import again" in message
    assert len(names(sessions)) == 5

    path.write_text(broken.replace('"Eve', "Eve"), "utf-8")
    report = import_csv(path, sessions, CONSENT)
    assert (report.rows, report.added, report.existing, report.bad) == (11, 6, 5, 0)
    again = import_csv(path, sessions, CONSENT)
    assert (again.added, again.existing) == (0, 11)
    assert len(names(sessions)) == 11


def test_a_quote_swallowing_many_lines_stops_the_import(sessions, tmp_path) -> None:
    path = tmp_path / "list.csv"
    # The quote on line 3 is closed only on line 41, by a quote meant for another field.
    rows = _rows(1) + 'eve@example.org,"Eve\n' + _rows(37, start=1) + 'x@example.org,"X"\n'
    path.write_text("email,name\n" + rows, "utf-8")
    with pytest.raises(MailerError, match=r"list\.csv:3: .*quote") as caught:
        import_csv(path, sessions, CONSENT)
    assert "(1 added)" in str(caught.value)
    assert set(names(sessions)) == {"r0@example.org"}


def test_an_over_long_quoted_field_over_several_lines_stops(sessions, tmp_path) -> None:
    path = tmp_path / "list.csv"
    half = "x" * (csv.field_size_limit() // 2 + 1)
    path.write_text(
        f'email,name\nann@example.org,"{half}\n{half}\n{half}"\nbob@example.org,Bob\n', "utf-8"
    )
    with pytest.raises(MailerError, match=r"list\.csv:2: .*quote"):
        import_csv(path, sessions, CONSENT)
    assert names(sessions) == {}


def test_a_field_over_a_few_lines_is_a_bad_row_named_by_its_first_line(sessions, tmp_path):
    path = tmp_path / "list.csv"
    path.write_text(
        'email,name,tags\nann@example.org,Ann,"a\nb@example.org,B,"\nc@example.org,C,\n', "utf-8"
    )
    report = import_csv(path, sessions, CONSENT)
    assert (report.rows, report.added, report.bad) == (2, 1, 1)
    line, reason = report.problems[0]
    assert line == 2 and "lines 2–3" in reason
    assert set(names(sessions)) == {"c@example.org"}


def test_the_cli_stops_a_broken_import_in_one_line(cli, tmp_path: Path) -> None:
    path = tmp_path / "list.csv"
    path.write_text('email,name\nann@example.org,"Ann\nbob@example.org,Bob\n', "utf-8")
    result = cli("subscribers", "import", str(path), "--consent-source", "t")
    assert result.exit_code == 2
    assert result.stderr.startswith(f"error: {path}:2: ") and result.stderr.count("\n") == 1


@pytest.mark.parametrize(
    ("header", "problem"),
    [
        ('email,"name\n', "the header runs on to line 2: an open quote?"),
        ("email," + "x" * (csv.field_size_limit() + 1) + "\n", "the header cannot be read"),
    ],
)
def test_a_header_that_cannot_be_read_stops_before_anything(sessions, tmp_path, header, problem):
    path = tmp_path / "list.csv"
    path.write_text(header + "ann@example.org,Ann\n", "utf-8")
    with pytest.raises(MailerError) as caught:
        import_csv(path, sessions, CONSENT)
    assert str(caught.value).startswith(f"{path}:1: {problem}")
    assert names(sessions) == {}


def test_a_campaign_bar_shows_a_subject_with_braces_as_text(capsys) -> None:
    with CampaignBar("Weekly {oops} {task.fields} \x1b[2J", 1):
        pass  # the bar draws once more as it closes
    out = capsys.readouterr().out
    assert "Weekly {oops} {task.fields} \\u001b[2J" in out
