"""`mailer subscribers …` as an operator runs them, on SQLite and PostgreSQL: what each
command prints, its exit status, and what it changed in the store."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import sessionmaker

from subscribers import store
from subscribers.addresses import lookup_hash
from subscribers.models import Status, Subscriber, Suppression
from tests.cli.conftest import Cli, cells, ok, refused

CONSENT = store.Consent(source="test", text="yes")


@pytest.fixture
def readers(sessions: sessionmaker) -> sessionmaker:
    """Ann and Bob confirmed, Pat pending, Una unsubscribed (so suppressed), in that order."""
    with sessions.begin() as session:
        for email, name, status in (
            ("ann@example.org", "Ann", Status.CONFIRMED),
            ("bob@example.org", "Bob", Status.CONFIRMED),
            ("pat@example.org", "Pat", Status.PENDING),
            ("una@example.org", "Una", Status.CONFIRMED),
        ):
            store.add(session, email, CONSENT, name=name, status=status)
        store.unsubscribe(session, store.find(session, "una@example.org"), how="test")
    return sessions


def on_the_list(sessions: sessionmaker) -> dict[str, tuple[str, list[str], str]]:
    """email → (status, tags, consent source)."""
    with sessions() as session:
        return {
            s.email: (s.status, s.tags, s.consent_source)
            for s in session.scalars(select(Subscriber))
        }


def suppressed(sessions: sessionmaker, email: str) -> str | None:
    with sessions() as session:
        row = session.get(Suppression, lookup_hash(email))
        return row.reason if row is not None else None


def test_import_adds_the_good_rows_and_reports_each_other_one(
    cli: Cli, readers: sessionmaker, tmp_path: Path
) -> None:
    (tmp_path / "list.csv").write_text(
        "email,name,tags\n"
        "new@example.org,New,a;b\n"  # 2  added
        "not an address,X,\n"  # 3  bad
        "ann@example.org,Ann,\n"  # 4  on the list already
        "una@example.org,Una,\n"  # 5  suppressed: never brought back
        "NEW@example.org,New,\n"  # 6  repeated in the file
        "pat2@example.org,Pat,\n",  # 7  added
        "utf-8",
    )
    out = ok(
        cli("subscribers", "import", "list.csv", "--consent-source", "fair",
            "--tag", "2026", "--pending", "--errors", "bad.csv")
    )  # fmt: skip
    assert [row[-1] for row in cells(out)[1:7]] == ["6", "2", "1", "1", "1", "1"]
    assert cells(out)[7][:2] == ["line", "3:"]
    with open("bad.csv", newline="", encoding="utf-8") as file:
        bad = list(csv.reader(file))
    assert bad[0] == ["line", "reason"] and [row[0] for row in bad[1:]] == ["3"]
    listed = on_the_list(readers)
    assert listed["new@example.org"] == ("pending", ["2026", "a", "b"], "fair")
    assert listed["pat2@example.org"] == ("pending", ["2026"], "fair")
    assert listed["una@example.org"][0] == "unsubscribed"
    assert len(listed) == 6


def test_export_writes_one_csv_row_per_subscriber_of_the_status_asked(
    cli: Cli, readers: sessionmaker
) -> None:
    ok(cli("subscribers", "export", "--status", "confirmed", "--out", "confirmed.csv"))
    with open("confirmed.csv", newline="", encoding="utf-8") as file:
        rows = list(csv.DictReader(file))
    assert [(r["email"], r["name"], r["status"]) for r in rows] == [
        ("ann@example.org", "Ann", "confirmed"),
        ("bob@example.org", "Bob", "confirmed"),
    ]
    assert rows[0]["source"] == "test" and rows[0]["confirmed_at"]
    everyone = list(csv.DictReader(ok(cli("subscribers", "export")).splitlines()))
    assert [r["email"] for r in everyone] == [
        "ann@example.org",
        "bob@example.org",
        "pat@example.org",
        "una@example.org",
    ]


def test_list_shows_subscribers_oldest_first_by_status_and_limit(
    cli: Cli, readers: sessionmaker
) -> None:
    def emails(*args: str) -> list[str]:
        return [row[1] for row in cells(ok(cli("subscribers", "list", *args)))[1:]]

    assert emails() == ["ann@example.org", "bob@example.org", "pat@example.org", "una@example.org"]
    assert emails("--limit", "2") == ["ann@example.org", "bob@example.org"]
    assert emails("--status", "pending") == ["pat@example.org"]
    assert emails("--status", "bounced") == []


def test_show_prints_the_record_and_its_suppression(cli: Cli, readers: sessionmaker) -> None:
    rows = {row[0]: row[1:] for row in cells(ok(cli("subscribers", "show", "una@example.org")))}
    assert rows["email"] == ["una@example.org"] and rows["status"] == ["unsubscribed"]
    assert rows["consent_source"] == ["test"] and rows["consent_text"] == ["yes"]
    assert rows["suppressed"][:2] == ["unsubscribed", "since"]
    refused(cli("subscribers", "show", "nobody@example.org"), "nobody@example.org is not on")


def test_count_counts_each_status(cli: Cli, readers: sessionmaker) -> None:
    counts = {row[0]: row[1] for row in cells(ok(cli("subscribers", "count")))[1:]}
    assert counts == {
        "pending": "1",
        "confirmed": "2",
        "unsubscribed": "1",
        "bounced": "0",
        "complained": "0",
        "total": "4",
    }


def test_remove_deletes_the_row_but_keeps_the_suppression(cli: Cli, readers: sessionmaker) -> None:
    assert "Removed bob@example.org." in ok(cli("subscribers", "remove", "bob@example.org"))
    ok(cli("subscribers", "remove", "una@example.org"))
    assert set(on_the_list(readers)) == {"ann@example.org", "pat@example.org"}
    assert suppressed(readers, "una@example.org") == "unsubscribed"
    refused(cli("subscribers", "remove", "bob@example.org"), "bob@example.org is not on the list")


def test_gdpr_export_prints_everything_held_as_json(cli: Cli, readers: sessionmaker) -> None:
    data = json.loads(ok(cli("subscribers", "gdpr-export", "una@example.org")))
    assert data["subscriber"]["email"] == "una@example.org"
    assert data["subscriber"]["consent_source"] == "test"
    assert [a["kind"] for a in data["activity"]] == ["subscribed", "unsubscribed"]
    assert data["suppression"]["reason"] == "unsubscribed"
    nobody = json.loads(ok(cli("subscribers", "gdpr-export", "nobody@example.org")))
    assert nobody["subscriber"] is None and nobody["suppression"] is None


def test_erase_asks_first_then_keeps_only_the_hash(
    cli: Cli, readers: sessionmaker, tmp_path: Path
) -> None:
    declined = cli("subscribers", "erase", "ann@example.org", input="n\n")
    assert declined.exit_code == 1 and "Aborted" in declined.output
    assert "ann@example.org" in on_the_list(readers)

    assert "Erased ann@example.org." in ok(cli("subscribers", "erase", "ann@example.org", "--yes"))
    assert "ann@example.org" not in on_the_list(readers)
    assert suppressed(readers, "ann@example.org") == "erased"
    gone = json.loads(ok(cli("subscribers", "gdpr-export", "ann@example.org")))
    assert gone["subscriber"] is None and gone["activity"] == []

    (tmp_path / "again.csv").write_text("email\nann@example.org\n", "utf-8")
    out = ok(cli("subscribers", "import", "again.csv", "--consent-source", "old list"))
    assert ["suppressed,", "not", "added", "1"] in cells(out)
    assert "ann@example.org" not in on_the_list(readers)
