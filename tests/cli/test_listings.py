"""List-like commands through a pipe: whole tables, CSV a spreadsheet cannot run, JSON a
terminal cannot be steered by; and when a scheduled campaign goes out."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import update
from sqlalchemy.orm import sessionmaker

from mailer.cli import main
from subscribers import store
from subscribers.models import Status, Subscriber
from testkit.redis_db import redis_url
from tests.cli.conftest import Cli, cells, ok

LONG = "a-rather-long-local-part-of-an-address@newsletter-readers.example.org"
NAME = '=HYPERLINK("http://x")\x1b[31m'  # a formula, and a terminal escape


@pytest.fixture
def readers(sessions: sessionmaker) -> None:
    with sessions.begin() as session:
        store.add(session, LONG, store.Consent("a form", "yes"), status=Status.CONFIRMED)
        # Written as an old version may have stored it, past today's checks at the door.
        session.execute(update(Subscriber).values(name=NAME))


def test_a_table_through_a_pipe_is_not_cut_to_80_columns(database_url: str, readers: None) -> None:
    env = {"MAILER_DATABASE_URL": database_url, "COLUMNS": "80"}
    out = ok(CliRunner().invoke(main, ["subscribers", "list"], env=env))
    assert LONG in out and max(map(len, out.splitlines())) > 80
    assert "\x1b" not in out and "\\u001b[31m" in out


def test_csv_and_json_keep_every_value_and_run_none(cli: Cli, readers: None) -> None:
    rows = list(csv.DictReader(io.StringIO(ok(cli("subscribers", "list", "--format", "csv")))))
    assert rows[0]["email"] == LONG and rows[0]["name"] == "'" + NAME
    text = ok(cli("subscribers", "list", "--format", "json"))
    assert "\x1b" not in text and json.loads(text)[0]["name"] == NAME
    assert json.loads(text)[0]["id"] == 1


def test_campaigns_list_shows_when_a_scheduled_campaign_goes_out(
    cli: Cli, readers: None, tmp_path: Path
) -> None:
    (tmp_path / "post.md").write_text("---\ntitle: Later\n---\nHello.\n", "utf-8")
    ok(cli("send", "post.md", "--at", "2099-12-04T09:00+08:00", broker_url=redis_url()))
    row = cells(ok(cli("campaigns", "list")))[1]
    assert row[2] == "scheduled" and row[6:8] == ["2099-12-04", "01:00"]
    listed = json.loads(ok(cli("campaigns", "list", "--format", "json")))
    assert listed[0]["sends at (UTC)"] == "2099-12-04T01:00:00+00:00"
    again = ok(cli("send", "post.md", broker_url=redis_url()))
    assert "has campaign 1 already (scheduled, for 2099-12-04 01:00 UTC)" in again
    overview = json.loads(ok(cli("stats", "--format", "json")))
    assert overview[0]["id"] == 1 and overview[0]["subject"] == "Later"
