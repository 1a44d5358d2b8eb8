"""`mailer send --dry-run` and `--test-to` as an operator reads them, on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import sessionmaker

from mailer.store.ledger import Campaign
from subscribers import store
from subscribers.models import Status
from tests.cli.conftest import Cli, ok, refused

READERS = [f"reader{n}@example.org" for n in range(7)]


@pytest.fixture
def post(sessions: sessionmaker, tmp_path: Path) -> str:
    """A post with an image without alt text, and seven confirmed readers."""
    with sessions.begin() as session:
        for email in READERS:
            store.add(session, email, store.Consent("test", "yes"), status=Status.CONFIRMED)
    text = "---\ntitle: Dry weekly\n---\nHello.\n\n![](https://example.org/a.png)\n"
    (tmp_path / "post.md").write_text(text, "utf-8")
    return "post.md"


def campaigns(sessions: sessionmaker) -> int:
    with sessions() as session:
        return session.scalar(select(func.count()).select_from(Campaign)) or 0


def test_dry_run_names_the_first_readers_and_what_would_stop_the_send(
    cli: Cli, sessions: sessionmaker, post: str
) -> None:
    result = cli("send", post, "--dry-run", batch_size="5")
    assert result.exit_code == 2  # as the send would end: a script sees it
    out = result.stdout
    assert "to 7 confirmed subscribers in 2 batches through outbox" in out
    assert all(f"  {email}\n" in out for email in READERS[:5]) and READERS[5] not in out
    assert "… and 2 more (--list names them all)" in out
    # The linter's finding, said once; the send would stop on it without --force.
    assert out.count("error [missing-alt]") == 1 and "error error" not in out
    assert "The send would be refused: post.md: the linter found 1 error;" in out
    assert out.endswith("Nothing was sent.\n") and campaigns(sessions) == 0

    listed = ok(cli("send", post, "--dry-run", "--list", "--force", batch_size="7"))
    assert all(f"  {email}\n" in listed for email in READERS) and "more" not in listed
    assert "in 1 batch through" in listed and "would be refused" not in listed


def test_dry_run_says_a_real_backend_would_refuse_the_local_defaults(
    cli: Cli, sessions: sessionmaker, post: str
) -> None:
    env = {"backend": "sendgrid", "sendgrid_api_key": "SG.x", "sendgrid_host": "http://127.0.0.1:9"}
    result = cli("send", post, "--dry-run", "--force", **env)
    assert result.exit_code == 2
    out = result.stdout
    assert "The send would be refused: refusing to send through sendgrid with local" in out
    refused(cli("send", post, "--force", **env), "refusing to send through sendgrid")
    assert campaigns(sessions) == 0


def test_test_copies_go_to_each_address_given_and_the_seed_list(
    cli: Cli, sessions: sessionmaker, post: str
) -> None:
    given = ("--test-to", "a@example.org, B@Example.org", "--test-to", "c@example.org")
    out = ok(cli("send", post, "--force", *given, seed_list="seed@example.net,a@example.org"))
    assert (
        "Sent a test copy to a@example.org, B@example.org, c@example.org, seed@example.net" in out
    )
    to = sorted(
        line.removeprefix("To: ")
        for path in Path("outbox").glob("*.eml")
        for line in path.read_text("utf-8").splitlines()
        if line.startswith("To: ")
    )
    assert to == ["B@example.org", "a@example.org", "c@example.org", "seed@example.net"]
    assert campaigns(sessions) == 0


def test_a_bad_seed_list_is_refused_by_its_name(cli: Cli, post: str) -> None:
    result = cli("send", post, "--test-to", "a@example.org", seed_list="me@example.org,nobody")
    refused(result, "MAILER_SEED_LIST: Value error, 'nobody': ")
    assert not Path("outbox").exists()
