"""`mailer send`, `mailer campaigns` and `mailer demo` as an operator runs them: real processes."""

from __future__ import annotations

import email
import email.policy
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from testkit.sendgrid_standin import API_KEY, SendGridStandIn
from tests.cli.conftest import cells
from tests.conftest import ROOT

POST = """---
title: Operator weekly
scheduled: 2026-02-06
---
Hello from the command line, with [a link](https://example.org/story).
"""
LINT_ERROR_POST = """---
title: Missing alt weekly
---
A picture without words:

![](https://example.org/picture.png)
"""
CONFIRMED = ["ada@example.org", "grace@example.org", "linus@example.org"]


def run(
    *args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MAILER_")}
    clean["COLUMNS"] = "200"
    clean["PYTHONPATH"] = str(ROOT)
    clean["MAILER_DATABASE_URL"] = f"sqlite:///{cwd / 'mailer.db'}"
    return subprocess.run(
        [sys.executable, "-m", "mailer", *args],
        cwd=cwd,
        env={**clean, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def ok(*args: str, cwd: Path, env: dict[str, str] | None = None) -> str:
    result = run(*args, cwd=cwd, env=env)
    assert result.returncode == 0, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    return result.stdout


def outbox(folder: Path) -> list[Path]:
    return sorted((folder / "outbox").glob("*.eml")) if (folder / "outbox").exists() else []


def recipients(paths: list[Path]) -> list[str]:
    out = []
    for path in paths:
        message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        out.append(message["To"].addresses[0].addr_spec)
    return sorted(out)


def query(folder: Path, sql: str) -> list[tuple]:
    with sqlite3.connect(folder / "mailer.db") as connection:
        return connection.execute(sql).fetchall()


@pytest.fixture(scope="module")
def site_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with a migrated database, three confirmed readers, one pending, one who left."""
    tmp_path = tmp_path_factory.mktemp("site")
    ok("db", "upgrade", cwd=tmp_path)
    for address in CONFIRMED:
        ok("subscribers", "add", address, "--consent-source", "test", cwd=tmp_path)
    ok("subscribers", "add", "carol@example.org", "--consent-source", "test", cwd=tmp_path)
    ok("subscribers", "unsubscribe", "carol@example.org", cwd=tmp_path)
    # Pending: its confirmation email lands in the outbox, cleared below.
    ok("subscribers", "add", "pending@example.org", "--consent-source", "test", "--pending",
       cwd=tmp_path)  # fmt: skip
    assert query(tmp_path, "SELECT status, COUNT(*) FROM subscribers GROUP BY 1 ORDER BY 1") == [
        ("confirmed", 3),
        ("pending", 1),
        ("unsubscribed", 1),
    ]
    (tmp_path / "post.md").write_text(POST, "utf-8")
    shutil.rmtree(tmp_path / "outbox", ignore_errors=True)
    return tmp_path


@pytest.fixture
def site(site_template: Path, tmp_path: Path) -> Path:
    """A copy of the template for one test (each run uses the database in its own folder)."""
    folder = tmp_path / "site"
    shutil.copytree(site_template, folder)
    return folder


def test_dry_run_reports_the_audience_and_sends_nothing(site: Path) -> None:
    out = ok("send", "post.md", "--dry-run", cwd=site)
    assert "Would send “Operator weekly”" in out
    assert "to 3 confirmed subscribers in 1 batch through outbox" in out
    assert "Nothing was sent." in out
    assert outbox(site) == []
    assert query(site, "SELECT COUNT(*) FROM campaigns") == [(0,)]


def test_test_copy_goes_to_one_address_and_creates_no_campaign(site: Path) -> None:
    out = ok("send", "post.md", "--test-to", "x@example.org", cwd=site)
    assert "Sent a test copy to x@example.org" in out and "No campaign was created" in out
    sent = outbox(site)
    assert len(sent) == 1
    message = email.message_from_bytes(sent[0].read_bytes(), policy=email.policy.default)
    assert message["Subject"].startswith("[Test]")
    assert message["Subject"] == "[Test] Operator weekly"
    assert message["To"].addresses[0].addr_spec == "x@example.org"
    assert query(site, "SELECT COUNT(*) FROM campaigns") == [(0,)]
    assert query(site, "SELECT COUNT(*) FROM deliveries") == [(0,)]


def test_send_once_then_say_it_was_sent(site: Path) -> None:
    out = ok("send", "post.md", cwd=site)
    assert "Campaign 1 (sent): 3 recipients — sent 3, failed 0, unknown 0, skipped 0" in out
    assert "still queued 0; backend outbox" in out
    sent = outbox(site)
    assert recipients(sent) == sorted(CONFIRMED)
    assert query(site, "SELECT status, recipients FROM campaigns") == [("sent", 3)]
    assert query(site, "SELECT status, attempts, COUNT(*) FROM deliveries GROUP BY 1, 2") == [
        ("sent", 1, 3)
    ]
    before = {path.name: path.stat().st_mtime_ns for path in sent}

    again = ok("send", "post.md", cwd=site)
    assert "post.md has campaign 1 already (sent" in again and "nothing to do" in again
    assert {path.name: path.stat().st_mtime_ns for path in outbox(site)} == before
    assert query(site, "SELECT COUNT(*) FROM campaigns") == [(1,)]
    assert query(site, "SELECT SUM(attempts) FROM deliveries") == [(3,)]

    listing = cells(ok("campaigns", "list", cwd=site))
    assert listing[0][:4] == ["id", "post", "status", "recipients"]
    assert [row[:4] for row in listing[1:]] == [["1", "post", "sent", "3"]]
    shown = ok("campaigns", "show", "1", cwd=site)
    lines = {" ".join(row) for row in cells(shown)}
    assert "status sent" in lines and "recipients 3" in lines and "sent 3" in lines
    assert "failed 0" in lines and "queued 0" in lines

    missing = run("campaigns", "show", "7", cwd=site)
    assert missing.returncode == 2
    assert missing.stderr.startswith("error: no campaign 7") and "Traceback" not in missing.stderr


def test_lint_errors_refuse_the_send_unless_forced(site: Path) -> None:
    (site / "bad.md").write_text(LINT_ERROR_POST, "utf-8")
    refused = run("send", "bad.md", cwd=site)
    assert refused.returncode == 2
    assert "missing-alt" in refused.stdout
    assert refused.stderr.startswith("error: bad.md: the linter found 1 error; fix it")
    assert refused.stderr.count("\n") == 1 and "Traceback" not in refused.stderr
    assert outbox(site) == []
    assert query(site, "SELECT COUNT(*) FROM campaigns") == [(0,)]

    forced = ok("send", "bad.md", "--force", cwd=site)
    assert "sent 3" in forced
    assert recipients(outbox(site)) == sorted(CONFIRMED)


@pytest.mark.parametrize(
    "extra",
    [
        {},
        {"MAILER_SECRET_KEYS": "a-real-secret-for-this-test-long-enough"},
        {"MAILER_PUBLIC_URL": "https://mail.example.org"},
    ],
    ids=["both", "public-url", "secret"],
)
def test_sendgrid_with_local_defaults_is_refused(site: Path, extra: dict[str, str]) -> None:
    env = {
        "MAILER_BACKEND": "sendgrid",
        "MAILER_SENDGRID_API_KEY": "SG.not-a-real-key",
        "MAILER_SENDGRID_HOST": "http://127.0.0.1:9",  # loopback: nothing may leave anyway
        **extra,
    }
    result = run("send", "post.md", cwd=site, env=env)
    assert result.returncode == 2
    assert result.stderr.startswith("error: refusing to send through sendgrid with local defaults")
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    unsafe = {"MAILER_SECRET_KEYS", "MAILER_PUBLIC_URL"} - {k for k in extra}
    assert all(name in result.stderr for name in unsafe)
    assert query(site, "SELECT COUNT(*) FROM campaigns") == [(0,)]
    assert outbox(site) == []


def test_demo_sends_three_emails_once(tmp_path: Path) -> None:
    """In a folder of its own, outside the repository: the sample post is found anyway."""
    first = ok("demo", cwd=tmp_path)
    sent = outbox(tmp_path)
    assert recipients(sent) == ["ada@example.com", "grace@example.com", "linus@example.org"]
    assert "status" in first and "sent" in first
    assert all(f"outbox/{path.name}" in first.replace("\n", "") for path in sent)
    before = {path.name: path.stat().st_mtime_ns for path in sent}

    second = ok("demo", cwd=tmp_path)
    assert "was sent already" in second and "not sent again" in second
    assert {path.name: path.stat().st_mtime_ns for path in outbox(tmp_path)} == before
    assert query(tmp_path, "SELECT COUNT(*) FROM campaigns") == [(1,)]
    assert query(tmp_path, "SELECT SUM(attempts) FROM deliveries") == [(3,)]


def test_demo_without_its_post_says_what_it_needs_and_leaves_nothing(tmp_path: Path) -> None:
    result = run("demo", "no-such-post.md", cwd=tmp_path)
    assert result.returncode == 2
    assert "the demo needs a post: no-such-post.md is not there" in result.stderr
    assert "Traceback" not in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_send_that_ends_with_unknown_readers_says_so_and_exits_3(site: Path) -> None:
    """A request that never got an answer: its readers are unknown, the campaign is
    `unsettled`, not `sent`, and a script calling `mailer send` sees it in the exit status."""
    with SendGridStandIn() as standin:
        standin.stall(1, accept=False)
        env = {
            "MAILER_BACKEND": "sendgrid",
            "MAILER_SENDGRID_API_KEY": API_KEY,
            "MAILER_SENDGRID_HOST": standin.url,
            "MAILER_DELIVERY_TIMEOUT": "1",
            "MAILER_BATCH_SIZE": "2",
            "MAILER_SECRET_KEYS": "a-real-secret-for-this-test-long-enough",
            "MAILER_PUBLIC_URL": "https://mail.example.org",
        }
        result = run("send", "post.md", cwd=site, env=env)
    assert result.returncode == 3, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    assert "(unsettled)" in result.stdout
    assert "2 readers' outcome is unknown" in result.stdout.replace("\n", " ")
    assert query(site, "SELECT status, COUNT(*) FROM deliveries GROUP BY 1 ORDER BY 1") == [
        ("sent", 1),
        ("unknown", 2),
    ]
