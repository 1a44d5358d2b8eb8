"""One audience rule: the fill, the claim and the dry run agree on who gets a post."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from click.testing import CliRunner, Result
from sqlalchemy import update

from mailer.cli import main
from mailer.runtime import Runtime
from mailer.sending.batch import send_batch
from mailer.sending.dispatch import cancel, create_campaign, start
from mailer.store.ledger import Delivery
from subscribers import audience
from tests import test_dispatch
from tests.conftest import SAMPLE_POST
from tests.test_dispatch import (
    HeldQueue,
    edition_from,
    ledger,
    new_campaign,
    post_file,
    recipients_in_outbox,
    seed,
)

rt = test_dispatch.rt  # the fixture: a runtime on each test database, batches of 7


def _set_row(rt: Runtime, campaign_id: int, subscriber_id: int, status: str) -> None:
    with rt.sessions.begin() as session:
        session.execute(
            update(Delivery)
            .where(Delivery.campaign_id == campaign_id, Delivery.subscriber_id == subscriber_id)
            .values(status=status)
        )


def test_readers_an_earlier_campaign_of_the_post_reached_are_left_out_everywhere(
    rt: Runtime, tmp_path: Path
) -> None:
    readers = list(seed(rt, confirmed=6).eligible.items())  # (email, id), in id order
    ids = [subscriber_id for _, subscriber_id in readers]
    first = new_campaign(rt, tmp_path)
    assert start(rt, first, HeldQueue())
    for subscriber_id, status in zip(ids, ("sent", "unknown", "sending", "failed"), strict=False):
        _set_row(rt, first, subscriber_id, status)
    cancel(rt, first)
    with rt.sessions() as session:
        slug = edition_from(rt, post_file(tmp_path)).slug
        assert audience.count(session, slug) == 3  # failed and never tried: not reached

    path = post_file(tmp_path)
    second, new = create_campaign(rt, edition_from(rt, path), path, again=True)
    assert new
    assert start(rt, second.id, HeldQueue())
    assert sorted(row.subscriber_id for row in ledger(rt, second.id)) == ids[3:]
    # The cancel waited for a claim of the first campaign: one of its readers is in flight.
    _set_row(rt, first, ids[4], "sending")
    result = send_batch(rt, second.id, 0)
    assert (result.sent, result.skipped) == (2, 1)
    assert recipients_in_outbox(rt) == sorted(readers[i][0] for i in (3, 5))
    with rt.sessions() as session:
        assert audience.count(session, slug) == 0


def _mailer(*args: str, database: Path) -> Result:
    environ = {"MAILER_DATABASE_URL": f"sqlite:///{database}", "COLUMNS": "300"}
    result = CliRunner().invoke(main, list(args), env=environ)
    assert result.exit_code == 0, (result.output, result.exception)
    return result


def test_the_dry_run_says_what_the_send_would_do(tmp_path: Path) -> None:
    database = tmp_path / "mailer.db"
    _mailer("demo", database=database)
    post = str(SAMPLE_POST)

    dry = _mailer("send", post, "--dry-run", database=database).stdout
    real = _mailer("send", post, database=database).stdout
    assert "has campaign 1 already (sent, " in dry and "Would send" not in dry
    assert dry.split(" Nothing was sent.")[0].split() == real.split()

    # Cancelled once every reader had it (a cancel while its last batch was in flight).
    with sqlite3.connect(database) as connection:
        connection.execute("UPDATE campaigns SET status = 'cancelled'")
    dry = _mailer("send", post, "--dry-run", database=database).stdout
    assert "has campaign 1 already (cancelled, " in dry and "--again" in dry
    again = _mailer("send", post, "--dry-run", "--again", database=database).stdout
    assert "to 0 confirmed subscribers" in again  # the cancelled campaign reached all three
