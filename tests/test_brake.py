"""The reputation brake, through a real SMTP server that says "no such user" for some readers.

Thresholds are lowered for the test's size (5% of at least 20 attempted, batches of 10).
8% of readers bouncing hard pauses the campaign with the reason; 3% does not. A plain
resume is refused while the brake holds; ``--force`` goes on to the end.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from click.testing import CliRunner

from mailer.cli import main
from mailer.config import Settings
from mailer.runtime import Runtime
from mailer.sending.dispatch import progress
from tests.test_smtp import SECRET, Mailbox, free_port, seed, send, smtp_settings

READERS = [f"reader{i:03}@example.org" for i in range(100)]


class Bouncing(Mailbox):
    """Answers 550 5.1.1 (no such user) at RCPT TO for the given readers."""

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options) -> str:
        if address in self.refuse:
            return f"550 5.1.1 <{address}>: Recipient address rejected: User unknown"
        envelope.rcpt_tos.append(address)
        return "250 OK"


def _run(
    settings: Settings, database_url: str, tmp_path: Path, bouncing: list[str]
) -> Iterator[tuple[Runtime, int]]:
    handler = Bouncing(set(bouncing))
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    rt = Runtime(
        smtp_settings(
            settings,
            database_url,
            port,
            8000,
            batch_size=10,
            brake_bounce_min_attempted=20,
        )
    )
    try:
        seed(rt, READERS)
        yield rt, send(rt, tmp_path)
    finally:
        rt.close()
        controller.stop()


def _cli(rt: Runtime, monkeypatch: pytest.MonkeyPatch, *args: str):
    s = rt.settings
    for name, value in {
        "DATABASE_URL": s.database_url,
        "SECRET_KEYS": SECRET,
        "BACKEND": "smtp",
        "SMTP_HOST": s.smtp_host,
        "SMTP_PORT": str(s.smtp_port),
        "SMTP_SECURITY": "none",
        "BATCH_SIZE": "10",
        "BRAKE_BOUNCE_MIN_ATTEMPTED": "20",
    }.items():
        monkeypatch.setenv(f"MAILER_{name}", value)
    return CliRunner().invoke(main, list(args))


def test_eight_percent_hard_bounces_pause_the_campaign_until_forced(
    settings: Settings, database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bouncing = READERS[::12][:8]  # 8 of 100, spread through the list
    for rt, campaign_id in _run(settings, database_url, tmp_path, bouncing):
        p = progress(rt, campaign_id)
        assert p.status == "paused"
        assert p.queued > 0  # stopped early, the rest kept for the operator
        assert "reputation brake" in p.last_error
        assert "bounced hard" in p.last_error and "MAILER_BRAKE_BOUNCE_RATE" in p.last_error
        assert f"mailer campaigns resume {campaign_id} --force" in p.last_error

        shown = _cli(rt, monkeypatch, "campaigns", "show", str(campaign_id))
        assert "reputation brake" in shown.output and "engaged" in shown.output
        refused = _cli(rt, monkeypatch, "campaigns", "resume", str(campaign_id))
        assert refused.exit_code == 2 and "reputation brake" in refused.output
        assert progress(rt, campaign_id).status == "paused"

        forced = _cli(rt, monkeypatch, "campaigns", "resume", str(campaign_id), "--force")
        assert forced.exit_code == 0, forced.output
        p = progress(rt, campaign_id)
        assert (p.status, p.queued, p.sent, p.failed) == ("sent", 0, 92, 8)


def test_three_percent_hard_bounces_do_not(
    settings: Settings, database_url: str, tmp_path: Path
) -> None:
    bouncing = [READERS[35], READERS[65], READERS[95]]
    for rt, campaign_id in _run(settings, database_url, tmp_path, bouncing):
        p = progress(rt, campaign_id)
        assert (p.status, p.sent, p.failed, p.last_error) == ("sent", 97, 3, "")
