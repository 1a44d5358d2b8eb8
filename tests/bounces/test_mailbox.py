"""A real send through SMTP with VERP, real-format reports in a real Dovecot, `mailer bounces`.

The copies go out through the SMTP backend to aiosmtpd, each from its own envelope
sender; the reports in tests/data/bounces are filled in with what each reader's copy
really carried and put into the bounce mailbox; ``mailer bounces fetch`` then suppresses
the bounced and complaining readers once, counts the soft bounce, files every message
away, and a second reading changes nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from string import Template

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from mailer.bounces.report import parse
from mailer.cli import main
from mailer.config import Settings
from mailer.delivery.message import (
    Batch,
    Envelope,
    Sender,
    delivery_key,
    key_ids,
    message_id_ids,
)
from mailer.delivery.verp import Verp
from mailer.runtime import Runtime
from mailer.tokens import Signer
from subscribers.models import Status, Subscriber
from tests.bounces.conftest import Dovecot
from tests.test_smtp import SECRET, Mailbox, deliveries, seed, send, smtp_settings

DATA = Path(__file__).resolve().parent.parent / "data" / "bounces"
BOUNCE_DOMAIN = "bounces.example.com"
# Each reader and the report that comes back about their copy.
REPORTS = {
    "gone-postfix@example.org": "postfix-user-unknown.eml",
    "gone-exim@example.org": "exim-free-text.eml",
    "full@example.org": "gmail-over-quota.eml",
    "gone-microsoft@example.org": "microsoft-recipient-not-found.eml",
    "spam@example.org": "arf-abuse.eml",
    "away@example.org": "out-of-office.eml",
}
QUIET = "fine@example.org"  # nothing comes back about this one


@pytest.fixture
def rt(
    settings: Settings, database_url: str, smtp_server: tuple[Mailbox, int]
) -> Iterator[Runtime]:
    _, port = smtp_server
    runtime = Runtime(
        smtp_settings(settings, database_url, port, 8000, bounce_domain=BOUNCE_DOMAIN)
    )
    yield runtime
    runtime.close()


def test_each_copy_goes_out_from_its_own_verp_address(
    rt: Runtime, smtp_server: tuple[Mailbox, int], tmp_path: Path
) -> None:
    handler, _ = smtp_server
    ids = seed(rt, [*REPORTS, QUIET])
    campaign_id = send(rt, tmp_path)
    rows = deliveries(rt, campaign_id)
    verp = Verp(Signer([SECRET]), BOUNCE_DOMAIN)
    for address, received in handler.by_recipient().items():
        local, _, domain = received.mail_from.partition("@")
        assert domain == BOUNCE_DOMAIN and local.startswith("bounces+") and len(local) <= 64
        assert verp.parse(received.mail_from) == (campaign_id, rows[ids[address]].id)
        assert received.message()["From"].addresses[0].addr_spec == "newsletter@example.com"
    # Another secret's, or a changed one, names nothing.
    some = next(iter(handler.received)).mail_from
    assert Verp(Signer(["another-secret-" * 3]), BOUNCE_DOMAIN).parse(some) is None
    assert verp.parse(some.replace("bounces+", "bounces+1")) is None


def _fill(received, name: str) -> bytes:
    template = Template((DATA / name).read_text())
    text = template.substitute(
        verp=received.mail_from,
        reader=received.rcpt_tos[0],
        message_id=received.message()["Message-ID"],
    )
    return text.replace("\n", "\r\n").encode()


def _fetch(rt: Runtime, server: Dovecot, monkeypatch: pytest.MonkeyPatch) -> str:
    s = rt.settings
    for name, value in {
        "DATABASE_URL": s.database_url,
        "SECRET_KEYS": SECRET,
        "BOUNCE_DOMAIN": BOUNCE_DOMAIN,
        "BOUNCE_IMAP_HOST": "127.0.0.1",
        "BOUNCE_IMAP_PORT": str(server.port),
        "BOUNCE_IMAP_SECURITY": "none",
        "BOUNCE_IMAP_USERNAME": server.username,
        "BOUNCE_IMAP_PASSWORD": server.password,
    }.items():
        monkeypatch.setenv(f"MAILER_{name}", value)
    result = CliRunner().invoke(main, ["bounces", "fetch"])
    assert result.exit_code == 0, result.output
    return " ".join(result.output.split())


def _readers(rt: Runtime) -> dict[str, tuple[str, int]]:
    with rt.sessions() as session:
        return {s.email: (s.status, s.soft_bounces) for s in session.scalars(select(Subscriber))}


def test_fetch_suppresses_once_counts_soft_bounces_and_files_everything(
    rt: Runtime,
    smtp_server: tuple[Mailbox, int],
    mailbox_server: Dovecot,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    handler, _ = smtp_server
    seed(rt, [*REPORTS, QUIET])
    send(rt, tmp_path)
    received = handler.by_recipient()
    reports = [_fill(received[address], name) for address, name in REPORTS.items()]
    mailbox_server.append(reports)

    output = _fetch(rt, mailbox_server, monkeypatch)
    assert "6 messages read" in output
    assert "3 hard bounces (suppressed), 1 soft (counted), 1 complaints (suppressed)" in output
    assert "0 unmatched, 1 unparseable, 0 read before" in output
    after = _readers(rt)
    assert after["gone-postfix@example.org"] == (Status.BOUNCED, 0)
    assert after["gone-exim@example.org"] == (Status.BOUNCED, 0)
    assert after["gone-microsoft@example.org"] == (Status.BOUNCED, 0)  # by its Message-ID
    assert after["spam@example.org"] == (Status.COMPLAINED, 0)
    assert after["full@example.org"] == (Status.CONFIRMED, 1)
    assert after["away@example.org"] == (Status.CONFIRMED, 0)
    assert after[QUIET] == (Status.CONFIRMED, 0)
    assert mailbox_server.folder("INBOX") == []
    assert len(mailbox_server.folder("Processed")) == 5
    assert len(mailbox_server.folder("Unparseable")) == 1

    # Read again: an empty inbox, and the same reports once more (a crash before the move).
    assert "0 messages read" in _fetch(rt, mailbox_server, monkeypatch)
    mailbox_server.append(reports[:3])
    again = _fetch(rt, mailbox_server, monkeypatch)
    assert "0 hard bounces" in again and "0 soft" in again and "3 read before" in again
    assert _readers(rt) == after
    assert len(mailbox_server.folder("Processed")) == 8


def test_ingest_reads_one_message_from_a_file_or_standard_input(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MAILER_DATABASE_URL", database_url)
    fill = {"verp": "bounces@example.com", "reader": QUIET, "message_id": "<1-1.ab@example.com>"}
    away = Template((DATA / "out-of-office.eml").read_text()).substitute(fill)
    postfix = Template((DATA / "postfix-user-unknown.eml").read_text()).substitute(fill)
    (tmp_path / "away.eml").write_text(away)
    result = CliRunner().invoke(main, ["bounces", "ingest", str(tmp_path / "away.eml")])
    assert result.exit_code == 1 and "1 unparseable" in result.output
    result = CliRunner().invoke(main, ["bounces", "ingest", "-"], input=postfix.encode())
    assert result.exit_code == 0 and "-: unmatched" in result.output  # no such delivery


def test_a_message_id_names_its_copy_up_to_the_largest_id() -> None:
    """What ``Batch.message_id`` writes, ``message_id_ids`` reads back (the ingest's second
    way to find a copy); a key beyond the id columns' range names nothing."""
    largest = 2**63 - 1
    envelope = Envelope("a@example.org", "", delivery_key(7, largest))
    batch = Batch("S", "<p>x</p>", "x", Sender("news@example.com"), (envelope,))
    assert message_id_ids(batch.message_id(envelope)) == (7, largest)
    assert key_ids(delivery_key(7, largest + 1)) is None
    assert message_id_ids("<7-8.abc@example.com>") == (7, 8)
    assert message_id_ids("<7-8@example.com>") is None  # no nonce: not one of ours
    assert key_ids("test-1") is None  # a test send's key


def test_a_part_in_a_charset_python_does_not_know_is_read_as_utf8() -> None:
    """One such report in the mailbox stopped every fetch (LookupError) and stayed there."""
    fill = {"verp": "bounces@example.com", "reader": QUIET, "message_id": "<1-1.ab@example.com>"}
    postfix = Template((DATA / "postfix-user-unknown.eml").read_text()).substitute(fill)
    odd = postfix.replace("charset=utf-8", 'charset="x-unknown-charset"')
    assert odd != postfix
    report = parse(odd.encode())
    assert (report.kind, report.recipient) == ("hard", QUIET)
