"""The reputation brake, through a real SMTP server that says "no such user" for some readers.

Thresholds are lowered for the test's size (5% of at least 20 attempted, batches of 10).
8% of readers bouncing hard pauses the campaign with the reason; 3% does not. A plain
resume is refused while the brake holds; ``--force`` goes on to the end.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from string import Template

import httpx
import pytest
from aiosmtpd.controller import Controller
from click.testing import CliRunner
from sqlalchemy import select
from sqlalchemy.orm import sessionmaker

from mailer.bounces.ingest import ingest_message
from mailer.cli import main
from mailer.clock import utcnow
from mailer.config import Settings
from mailer.delivery.verp import Verp
from mailer.runtime import Runtime
from mailer.sending import brake
from mailer.sending.dispatch import progress
from mailer.store.ledger import Campaign, Delivery
from mailer.tracking.events import Event, EventKind, EventRecord, apply, record
from subscribers.models import Subscriber
from tests.event_support import WebhookKey, post_events, sg_event
from tests.event_support import seed as seed_readers
from tests.live_server import LiveServer, server_factory
from tests.test_smtp import SECRET, Mailbox, free_port, seed, send, smtp_settings

start_server = server_factory()
BOUNCE_DATA = Path(__file__).resolve().parent / "data" / "bounces"

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
        monkeypatch.setenv("COLUMNS", "1000")  # one line per figure
        stats = " ".join(_cli(rt, monkeypatch, "stats", str(campaign_id)).output.split())
        assert "reputation brake │ engaged" in stats and "bounced hard" in stats
        assert "the brake stops the send over 5.0% of at least 20)" in stats
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


def _sending(sessions: sessionmaker, readers: list[str]) -> tuple[int, dict[str, int]]:
    """A campaign in the middle of its send, each reader's copy accepted; the delivery ids."""
    ids = seed_readers(sessions, readers)
    with sessions.begin() as session:
        campaign = Campaign(
            slug="weekly", subject="Weekly", edition={}, backend="smtp", status="sending"
        )
        session.add(campaign)
        session.flush()
        rows = {
            email: Delivery(campaign_id=campaign.id, subscriber_id=i, batch=0, status="sent")
            for email, i in ids.items()
        }
        session.add_all(rows.values())
        session.flush()
        return campaign.id, {email: row.id for email, row in rows.items()}


def test_only_bounces_of_a_missing_address_count_as_hard(sessions: sessionmaker) -> None:
    """A soft bounce that takes its reader past the limit is no hard bounce, nor is a block."""
    readers = ["gone@example.org", "full@example.org", "blocked@example.org"]
    campaign_id, rows = _sending(sessions, readers)
    events = [
        Event(EventKind.BOUNCED, utcnow(), "smtp", campaign_id, rows[email], email, bounce=kind)
        for email, kind in zip(readers, ["hard", "soft", "block"], strict=True)
    ]
    with sessions.begin() as session:
        apply(session, record(session, events), soft_bounce_limit=1)
    with sessions() as session:
        assert session.scalar(select(Subscriber.status).where(Subscriber.email == readers[1])) == (
            "bounced"  # suppressed, past the soft-bounce limit
        )
        stored = dict(session.execute(select(EventRecord.delivery_id, EventRecord.bounce)).all())
        assert stored == {
            rows[readers[0]]: "hard",
            rows[readers[1]]: "soft",
            rows[readers[2]]: "block",
        }
        assert brake.rates(session, campaign_id).hard_bounces == 1


COMPLAINTS = {"brake_complaint_min_delivered": 20, "brake_complaint_rate": 0.1}
TWENTY = [f"reader{i:02}@example.org" for i in range(20)]


def test_complaints_by_webhook_pause_a_sending_campaign_over_the_rate(
    start_server: Callable[..., LiveServer], sessions: sessionmaker
) -> None:
    """Between batches (no batch runs here): 2 of 20 (10%) is not over 10%; the third is."""
    key = WebhookKey()
    server = start_server(sendgrid_webhook_key=key.public_b64, stats_token="t" * 32, **COMPLAINTS)
    campaign_id, rows = _sending(sessions, TWENTY)

    def complain(email: str) -> None:
        event = sg_event("spamreport", email, f"{campaign_id}-{rows[email]}")
        assert post_events(server.url, [event], key).status_code == 200

    complain(TWENTY[0])
    complain(TWENTY[1])
    assert _campaign(sessions, campaign_id) == ("sending", "")
    complain(TWENTY[2])
    status, reason = _campaign(sessions, campaign_id)
    assert status == "paused"
    assert "3 of 20 delivered messages drew a spam complaint" in reason
    assert "MAILER_BRAKE_COMPLAINT_RATE" in reason

    page = httpx.get(
        f"{server.url}/stats/{campaign_id}", headers={"authorization": "Bearer " + "t" * 32}
    )
    assert page.status_code == 200
    text = " ".join(page.text.split())
    assert 'role="alert"' in text and "spam complaint" in text
    assert "15.00%" in text and "the brake stops the send over 10.00% of at least 20" in text


def _arf(verp: Verp, campaign_id: int, delivery_id: int, reader: str) -> bytes:
    """The RFC 5965 example as tests/data/bounces has it, about this reader's copy."""
    template = Template((BOUNCE_DATA / "arf-abuse.eml").read_text())
    text = template.substitute(
        verp=verp.address(campaign_id, delivery_id), reader=reader, message_id="<x@example.com>"
    ).replace("fbl-20261130102030-8d7f", f"fbl-{delivery_id}")  # each report its own id
    return text.replace("\n", "\r\n").encode()


def test_complaints_from_the_bounce_mailbox_pause_over_the_rate(
    settings: Settings, database_url: str
) -> None:
    rt = Runtime(
        settings.model_copy(
            update={"database_url": database_url, "bounce_domain": "bounces.example.com"}
            | COMPLAINTS
        )
    )
    try:
        campaign_id, rows = _sending(rt.sessions, TWENTY)
        verp = Verp(rt.signer, "bounces.example.com")
        for reader in TWENTY[:2]:
            data = _arf(verp, campaign_id, rows[reader], reader)
            assert ingest_message(rt.sessions, rt.settings, verp, data) == "complaint"
        assert _campaign(rt.sessions, campaign_id) == ("sending", "")
        data = _arf(verp, campaign_id, rows[TWENTY[2]], TWENTY[2])
        assert ingest_message(rt.sessions, rt.settings, verp, data) == "complaint"
        status, reason = _campaign(rt.sessions, campaign_id)
        assert status == "paused" and "3 of 20 delivered messages" in reason
    finally:
        rt.close()


def _campaign(sessions: sessionmaker, campaign_id: int) -> tuple[str, str]:
    with sessions() as session:
        campaign = session.get(Campaign, campaign_id)
        assert campaign is not None
        return campaign.status, campaign.last_error
