"""Exports of the tools people leave, imported as they come (tests/data/imports/).

Each file is recognised by its header and read with that tool's mapping; rows the tool
marks as gone (unsubscribed, cleaned, blocked, removed) become suppressions and are never
added, by this import or a later one. On SQLite and PostgreSQL alike.
"""

from __future__ import annotations

import datetime as dt
import io
import shutil
from pathlib import Path

import pytest
from sqlalchemy import select

from subscribers import store
from subscribers.addresses import lookup_hash
from subscribers.importer import import_csv
from subscribers.models import Status, Subscriber, Suppression
from subscribers.sources import split_tags

DATA = Path(__file__).parent / "data" / "imports"
GONE = ("left@example.org", "ada@example.org", "bounced@example.org")
CONSENT = store.Consent(source="import:old-tool", text="Signed up on the old list")


def _import(sessions, name: str, **options):
    return import_csv(DATA / name, sessions, CONSENT, **options)


def _subscribers(sessions) -> dict[str, Subscriber]:
    with sessions() as session:
        return {s.email: s for s in session.scalars(select(Subscriber))}


def _suppressed(sessions, *emails: str) -> dict[str, str]:
    """Which of ``emails`` are suppressed, and why."""
    with sessions() as session:
        found = {e: session.get(Suppression, lookup_hash(e)) for e in emails}
    return {e: s.reason for e, s in found.items() if s is not None}


def _utc(*parts: int) -> dt.datetime:
    return dt.datetime(*parts, tzinfo=dt.UTC)


def test_mailchimp_audience_export(sessions):
    report = _import(sessions, "mailchimp_subscribed_members_export.csv")
    assert report.mapping == (
        "Mailchimp audience export: Email Address → email, First Name + Last Name → name, "
        "TAGS → tags, OPTIN_TIME → consent time, CONFIRM_TIME → confirmation time, "
        "OPTIN_IP → consent IP; times in UTC"
    )
    assert (report.rows, report.added, report.bad) == (4, 3, 1)
    assert report.problems == [(5, "OPTIN_TIME: 'yesterday' is not a date and time")]
    found = _subscribers(sessions)
    ada, grace, zoe = (found[f"{n}@example.org"] for n in ("ada", "grace", "zoe"))
    assert (ada.name, ada.tags, ada.status) == (
        "Ada Lovelace",
        ["Customers", "VIP, Gold"],
        "confirmed",
    )
    assert (ada.consent_at, ada.confirmed_at) == (
        _utc(2021, 3, 4, 10, 11, 12),
        _utc(2021, 3, 4, 10, 15),
    )
    assert ada.consent_ip == "203.0.113.7" and grace.consent_ip == "2001:db8::1"
    assert grace.confirmed_at == grace.consent_at == _utc(2022, 7, 1, 8)
    assert (zoe.name, zoe.tags) == ("Zoë", ["Friends"])
    assert zoe.consent_at == zoe.created_at  # no opt-in time: the import's moment


def test_mailchimp_unsubscribed_and_cleaned_exports_suppress_and_stay_suppressed(sessions):
    _import(sessions, "mailchimp_subscribed_members_export.csv")
    left = _import(sessions, "mailchimp_unsubscribed_members_export.csv")
    cleaned = _import(sessions, "mailchimp_cleaned_members_export.csv")
    assert (
        left.mapping == "Mailchimp unsubscribed members export (suppressed): Email Address → email"
    )
    assert (left.gone, left.taken_off, left.added, cleaned.gone, cleaned.added) == (2, 1, 0, 1, 0)
    assert _suppressed(sessions, *GONE, "grace@example.org") == {
        "left@example.org": "unsubscribed",
        "ada@example.org": "unsubscribed",
        "bounced@example.org": "bounced",
    }
    found = _subscribers(sessions)
    assert "left@example.org" not in found and "bounced@example.org" not in found
    assert (found["ada@example.org"].status, found["grace@example.org"].status) == (
        "unsubscribed",
        "confirmed",
    )
    again = _import(sessions, "mailchimp_subscribed_members_export.csv")  # the re-import
    assert (again.added, again.suppressed) == (0, 1)
    assert _subscribers(sessions)["ada@example.org"].status == "unsubscribed"


def test_a_departure_anywhere_in_the_file_wins_over_a_subscription(sessions, tmp_path):
    path = tmp_path / "both.csv"
    path.write_text(
        "email,status\nkim@example.org,subscribed\nlee@example.org,confirmed\n"
        "KIM@example.org,unsubscribed\n",
        "utf-8",
    )
    report = import_csv(path, sessions, CONSENT)
    assert set(_subscribers(sessions)) == {"lee@example.org"}
    assert _suppressed(sessions, "kim@example.org", "lee@example.org") == {
        "kim@example.org": "unsubscribed"
    }
    assert (report.added, report.suppressed, report.gone) == (1, 1, 1)


def test_substack_export(sessions):
    report = _import(sessions, "substack_subscribers.csv")
    assert report.mapping.startswith(
        "Substack subscriber export: email → email, created_at → consent time, "
        "email_disabled → status"
    )
    assert (report.added, report.gone) == (2, 1)
    found = _subscribers(sessions)
    assert set(found) == {"reader@example.org", "paid@example.org"}
    assert found["reader@example.org"].consent_at == _utc(2022, 11, 5, 12, 30, 45, 123000)
    assert _suppressed(sessions, "quiet@example.org", "reader@example.org") == {
        "quiet@example.org": "unsubscribed"
    }


def test_buttondown_export(sessions):
    errors = io.StringIO()
    report = _import(sessions, "buttondown_subscribers.csv", errors_to=errors)
    assert report.mapping.startswith("Buttondown subscriber export: email → email, tags → tags")
    assert (report.added, report.gone, report.bad) == (2, 2, 1)
    assert errors.getvalue().splitlines()[1] == (
        "6,subscriber_type: 'mystery' is not a status this import knows"
    )
    found = _subscribers(sessions)
    assert (found["jo@example.org"].tags, found["jo@example.org"].status) == (
        ["python", "weekly"],
        "confirmed",
    )
    assert found["jo@example.org"].consent_ip == "198.51.100.4"
    assert found["new@example.org"].status == "pending"  # unactivated: not confirmed there
    assert _suppressed(sessions, "gone@example.org", "spam@example.org", "jo@example.org") == {
        "gone@example.org": "unsubscribed",
        "spam@example.org": "manual",
    }


def test_listmonk_export(sessions):
    report = _import(sessions, "listmonk_subscribers.csv")
    assert report.mapping == (
        "listmonk subscriber export: email → email, name → name, created_at → consent time, "
        "status → status; attributes are not kept"
    )
    found = _subscribers(sessions)
    assert list(found) == ["lin@example.org"]
    assert found["lin@example.org"].consent_at == _utc(2023, 6, 7, 8, 9, 10, 123456)
    assert _suppressed(sessions, "blocked@example.org", "lin@example.org") == {
        "blocked@example.org": "manual"
    }


def test_a_semicolon_file_with_comma_separated_tags(sessions, tmp_path):
    report = _import(sessions, "semicolons.csv", status=Status.PENDING, tags=("de-list",))
    assert report.mapping == "CSV: E-Mail → email, Name → name, Tags → tags"
    found = _subscribers(sessions)
    assert (found["anna@example.de"].name, found["anna@example.de"].tags) == (
        "Anna Müller",
        ["de-list", "news", "de"],
    )
    assert (found["ben@example.de"].name, found["ben@example.de"].tags) == (
        "Ben; the second",
        ["de-list", "vip", "de"],
    )
    tabbed = tmp_path / "tabs.tsv"
    tabbed.write_text("name\temail\nTab, Person\ttab@example.org\n", "utf-8")
    assert import_csv(tabbed, sessions, CONSENT).added == 1
    assert _subscribers(sessions)["tab@example.org"].name == "Tab, Person"


@pytest.mark.parametrize(
    ("cell", "tags"),
    [
        ("a;b , c", ["a", "b", "c"]),
        ('"Customers","VIP, Gold"', ["Customers", "VIP, Gold"]),
        ('["x", "y z"]', ["x", "y z"]),
        ("[not json", ["[not json"]),
        ("  ", []),
    ],
)
def test_split_tags(cell, tags):
    assert split_tags(cell) == tags


def test_the_cli_says_which_mapping_it_used_and_where_the_bad_rows_are(cli_run, tmp_path):
    path = tmp_path / "buttondown.csv"
    shutil.copy(DATA / "buttondown_subscribers.csv", path)
    out = cli_run("subscribers", "import", str(path), "--consent-source", "buttondown")
    assert "Read as Buttondown subscriber export: email → email" in out
    assert "left the old tool: suppressed" in out
    assert f"every bad row is in {tmp_path / 'buttondown.errors.csv'}" in out.replace("\n", "")
    assert (tmp_path / "buttondown.errors.csv").read_text("utf-8").startswith("line,reason")


@pytest.fixture
def cli_run(database_url: str):
    """``mailer ARGS…`` in this process, on the test's database; its output."""
    from click.testing import CliRunner

    from mailer.cli import main

    def run(*args: str) -> str:
        env = {"MAILER_DATABASE_URL": database_url, "COLUMNS": "300"}
        result = CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return result.output

    return run
