"""Issue 10: a name, subject or sender name must never add a header or replace the body.

Python 3.11.7 (this project's interpreter) still has CVE-2024-6923: the ``email`` package
decodes an RFC 2047 encoded word in a display name and writes its CR/LF back out raw. A
subscriber name stored before names were checked at the door must therefore be refused
where the message is built: that reader fails alone, with the reason in the ledger, and
every other reader of the batch gets exactly the message that was meant.
"""

from __future__ import annotations

import dataclasses
import email
import email.policy
from collections.abc import Callable, Iterator
from email.message import EmailMessage
from pathlib import Path

import pytest
from sqlalchemy import update

import mailer.delivery.message
from mailer.config import Settings
from mailer.content.lint import lint
from mailer.content.post import load_post
from mailer.content.render import Renderer
from mailer.delivery import Outcome
from mailer.delivery.identity import Identity
from mailer.delivery.message import Batch, Envelope, Sender
from mailer.delivery.outbox import OutboxBackend
from mailer.delivery.sendgrid import SendGridBackend
from mailer.delivery.smtp import SmtpBackend
from mailer.edition import Edition
from mailer.errors import PermanentDeliveryError, UnsafeHeaderValue
from mailer.runtime import Runtime
from mailer.sending.confirmation import ConfirmationMail
from mailer.sending.dispatch import progress
from mailer.store.db import make_engine, upgrade
from mailer.store.ledger import Delivery, DeliveryState
from mailer.tokens import Signer
from subscribers import store
from subscribers.models import Status, Subscriber
from subscribers.optin import OptIn
from testkit.sendgrid_standin import API_KEY, SendGridStandIn
from tests.conftest import DATABASES
from tests.test_smtp import Mailbox, deliveries, send, smtp_sink

ATTACK = (
    "=?utf-8?q?X=0D=0AReply-To:_a@attacker.example=0D=0AContent-Type:_text/plain=0D=0A=0D=0A"
    "Pay_at_https://pay.attacker.example/?="
)
UNSAFE_NAMES = {
    "encoded-word": ATTACK,
    "crlf": "Eve\r\nReply-To: a@attacker.example",
    "nul": "Eve\x00Reply-To: a@attacker.example",
    "line-separator": "Eve\u2028Reply-To: a@attacker.example",
    "c1-next-line": "Eve\x85Reply-To: a@attacker.example",
    "very-long": "Eve " * 300,
}
# Each name on each database that can hold it: PostgreSQL itself refuses a NUL and more
# than subscribers.name's 200 characters, so those rows never exist there.
NAMES = pytest.mark.parametrize(
    ("database_url", "name"),
    [
        pytest.param(database, name, id=f"{database}-{label}")
        for database in DATABASES
        for label, name in UNSAFE_NAMES.items()
        if database == "sqlite" or ("\x00" not in name and len(name) <= 200)
    ],
    indirect=["database_url"],
)
# What a newsletter message carries, in this order, and nothing else.
INTENDED = ["From", "To", "Subject", "Date", "Message-ID", "List-Id", "List-Unsubscribe",
            "List-Unsubscribe-Post", "Feedback-ID", "MIME-Version", "Content-Type"]  # fmt: skip
VICTIM, ANN = "victim@example.org", "ann@example.org"
BODY = "Hello from the header test, with [a link](https://example.org/story)."
POST = f"---\ntitle: Header weekly\n---\n{BODY}\n"
SENDER = Sender("newsletter@example.com", "The Weekly")


# ---------------------------------------------------------------- helpers


def parse(data: bytes) -> EmailMessage:
    return email.message_from_bytes(data, policy=email.policy.default)


def assert_intended(message: EmailMessage, address: str, headers: list[str] = INTENDED) -> None:
    """Exactly the headers meant, to ``address``, and the real two parts, text first."""
    assert message.keys() == headers
    assert "Reply-To" not in message and message.defects == []
    assert [a.addr_spec for a in message["To"].addresses] == [address]
    assert message.get_content_type() == "multipart/alternative"
    parts = list(message.iter_parts())
    assert [p.get_content_type() for p in parts] == ["text/plain", "text/html"]
    for part in parts:
        assert "Hello from the header test" in part.get_content()
        assert "attacker" not in part.get_content()


@pytest.fixture
def mailbox() -> Iterator[tuple[Mailbox, int]]:
    handler = Mailbox(set())
    with smtp_sink(handler) as port:
        yield handler, port


@pytest.fixture
def standin() -> Iterator[SendGridStandIn]:
    with SendGridStandIn() as running:
        yield running


def seed(rt: Runtime, victim_name: str) -> dict[str, int]:
    """Ann, and a victim whose name was stored before names were checked at the door."""
    consent = store.Consent(source="test", text="test")
    ids = {}
    with rt.sessions.begin() as session:
        for address, name in ((VICTIM, "Victim"), (ANN, "Ann Reader")):
            added = store.add(session, address, consent, name=name, status=Status.CONFIRMED)
            assert added.subscriber is not None
            ids[address] = added.subscriber.id
        stored = update(Subscriber).where(Subscriber.id == ids[VICTIM]).values(name=victim_name)
        session.execute(stored)
    return ids


def send_campaign(rt: Runtime, tmp_path: Path) -> int:
    return send(rt, tmp_path, POST)


def assert_only_the_victim_failed(rt: Runtime, campaign_id: int, ids: dict[str, int]) -> Delivery:
    rows = deliveries(rt, campaign_id)
    victim = rows[ids[VICTIM]]
    assert victim.status == DeliveryState.FAILED
    assert victim.error.startswith("not sent: the reader's name: "), victim.error
    assert rows[ids[ANN]].status == DeliveryState.SENT
    p = progress(rt, campaign_id)
    assert (p.status, p.sent, p.failed, p.queued, p.sending) == ("sent", 1, 1, 0, 0)
    return rows[ids[ANN]]


def outbox_messages(folder: Path) -> dict[str, EmailMessage]:
    messages = [parse(path.read_bytes()) for path in sorted(folder.glob("*.eml"))]
    return {m["To"].addresses[0].addr_spec: m for m in messages}


# ---------------------------------------------------------------- through the three backends


@NAMES
def test_outbox_refuses_the_unsafe_reader_and_sends_the_rest(
    settings: Settings, runtime, database_url: str, tmp_path: Path, name: str
) -> None:
    rt = runtime(settings, database_url=database_url, outbox_dir=tmp_path / "outbox")
    ids = seed(rt, name)
    campaign_id = send_campaign(rt, tmp_path)

    messages = outbox_messages(tmp_path / "outbox")
    assert list(messages) == [ANN]
    assert_intended(messages[ANN], ANN)
    assert_only_the_victim_failed(rt, campaign_id, ids)


@NAMES
def test_smtp_refuses_the_unsafe_reader_and_sends_the_rest(
    settings: Settings, runtime, database_url: str, mailbox, tmp_path: Path, name: str
) -> None:
    handler, port = mailbox
    rt = runtime(
        settings,
        database_url=database_url,
        backend="smtp",
        smtp_host="127.0.0.1",
        smtp_port=port,
        smtp_security="none",
    )
    ids = seed(rt, name)
    campaign_id = send_campaign(rt, tmp_path)

    received = handler.by_recipient()
    assert list(received) == [ANN]
    message = received[ANN].message()
    assert_intended(message, ANN)
    ann = assert_only_the_victim_failed(rt, campaign_id, ids)
    assert ann.provider_id == message["Message-ID"]  # the ledger names the message sent


@NAMES
def test_sendgrid_leaves_the_unsafe_reader_out_of_a_valid_request(
    settings: Settings, runtime, database_url: str, standin, tmp_path: Path, name: str
) -> None:
    rt = runtime(
        settings,
        database_url=database_url,
        backend="sendgrid",
        sendgrid_host=standin.url,
        sendgrid_api_key=API_KEY,
    )
    ids = seed(rt, name)
    campaign_id = send_campaign(rt, tmp_path)

    assert standin.invalid == [] and dict(standin.answers) == {202: 1}
    [request] = standin.requests
    assert [p["to"] for p in request["personalizations"]] == [
        [{"email": ANN, "name": "Ann Reader"}]
    ]
    assert_only_the_victim_failed(rt, campaign_id, ids)


def test_a_refused_reader_stays_failed_when_the_request_is_not_answered(
    settings: Settings, runtime, sessions, database_url: str, tmp_path: Path
) -> None:
    """The refusal is the reader's own: a request that times out makes the others
    `unknown`, never the reader it did not carry."""
    with SendGridStandIn(delay=3) as slow:
        rt = runtime(
            settings,
            database_url=database_url,
            backend="sendgrid",
            sendgrid_host=slow.url,
            sendgrid_api_key=API_KEY,
            delivery_timeout=0.5,
        )
        ids = seed(rt, UNSAFE_NAMES["encoded-word"])
        campaign_id = send_campaign(rt, tmp_path)
    rows = deliveries(rt, campaign_id)
    assert rows[ids[VICTIM]].status == DeliveryState.FAILED
    assert rows[ids[VICTIM]].error.startswith("not sent: the reader's name: ")
    assert rows[ids[ANN]].status == DeliveryState.UNKNOWN


@pytest.mark.parametrize("name", UNSAFE_NAMES.values(), ids=UNSAFE_NAMES.keys())
def test_sendgrid_makes_no_request_when_every_reader_is_unsafe(standin, name: str) -> None:
    backend = SendGridBackend(API_KEY, standin.url, timeout=5)
    batch = Batch("Subject", "<p>hi</p>", "hi", SENDER, (Envelope(VICTIM, name, "1-1"),))
    [outcome] = backend.send(batch)
    assert (outcome.key, outcome.status) == ("1-1", "failed") and "reader's name" in outcome.error
    assert not standin.answers


def test_the_confirmation_email_refuses_a_stored_attack_name(
    settings: Settings, sessions, tmp_path: Path
) -> None:
    outcomes: list[Outcome] = []

    class Recording(OutboxBackend):
        def send(self, batch: Batch) -> list[Outcome]:
            result = super().send(batch)
            outcomes.extend(result)
            return result

    mail = ConfirmationMail(settings, Renderer(settings), Recording(tmp_path / "outbox"))
    optin = OptIn(settings, sessions, Signer(settings.secret_keys), mail)
    consent = store.Consent(source="form", text="I agree")
    with sessions.begin() as session:
        subscriber = store.add(session, VICTIM, consent, name="Victim").subscriber
        assert subscriber is not None
        subscriber.name = ATTACK  # as stored before names were checked at the door
    optin.send_confirmation(subscriber)

    [outcome] = outcomes
    assert outcome.status == "failed" and "reader's name" in outcome.error
    for path in (tmp_path / "outbox").glob("*.eml"):  # nothing, or nothing forged
        message = parse(path.read_bytes())
        assert "Reply-To" not in message
        assert [p.get_content_type() for p in message.iter_parts()] == ["text/plain", "text/html"]


# ---------------------------------------------------------------- values shared by the batch


SHARED = {
    "subject": {"subject": ATTACK},
    "subject-crlf": {"subject": "Weekly\r\nBcc: all@attacker.example"},
    "sender-name": {"sender": Sender("newsletter@example.com", ATTACK)},
}


@pytest.mark.parametrize("unsafe", SHARED.values(), ids=SHARED.keys())
def test_an_unsafe_shared_value_fails_the_batch_in_every_backend(
    unsafe: dict[str, object], mailbox, standin, tmp_path: Path
) -> None:
    handler, port = mailbox
    envelopes = (Envelope(ANN, "Ann Reader", "1-1"), Envelope(VICTIM, "Vic", "1-2"))
    batch = dataclasses.replace(Batch("Weekly", "<p>hi</p>", "hi", SENDER, envelopes), **unsafe)
    field = "sender name" if "sender" in unsafe else "subject"
    backends = [
        OutboxBackend(tmp_path / "outbox"),
        SmtpBackend("127.0.0.1", port, "none", timeout=5),
        SendGridBackend(API_KEY, standin.url, timeout=5),
    ]
    for backend in backends:
        with pytest.raises(PermanentDeliveryError, match=field):
            backend.send(batch)
    assert list((tmp_path / "outbox").glob("*")) == []
    assert handler.received == [] and not standin.answers


def test_an_unsafe_sender_name_fails_the_campaign_batches_not_each_reader_alone(
    settings: Settings, runtime, database_url: str, tmp_path: Path
) -> None:
    outbox = tmp_path / "outbox"
    rt = runtime(settings, database_url=database_url, outbox_dir=outbox, sender_name=ATTACK)
    ids = seed(rt, "Victim")
    campaign_id = send_campaign(rt, tmp_path)

    assert list(outbox.glob("*.eml")) == []
    rows = deliveries(rt, campaign_id)
    assert {rows[i].status for i in ids.values()} == {DeliveryState.FAILED}
    assert all("sender name" in rows[i].error for i in ids.values())
    assert "sender name" in progress(rt, campaign_id).last_error


# ---------------------------------------------------------------- the header block verifier


def good_message() -> tuple[bytes, list[str]]:
    batch = Batch(
        "Weekly", "<p>hi</p>", "hi", SENDER, (Envelope(ANN, "Ann Reader", "1-1", "https://u/1"),)
    )
    identity = Identity.of(Settings())  # as every backend that make_backend builds has
    data = mailer.delivery.message.to_bytes(batch, batch.envelopes[0], identity)
    return data, parse(data).keys()


def test_the_verifier_passes_a_built_message() -> None:
    data, names = good_message()
    assert names == INTENDED
    mailer.delivery.message.verify_header_block(data, names)


BCC = b"Bcc: x@attacker.example"
FORGED = {
    # What Python 3.11.7 writes for the attack name: two more headers, and the body replaced.
    "cve-2024-6923": lambda d: d.replace(
        b"To: Ann Reader <ann@example.org>",
        b"To: X\r\nReply-To: a@attacker.example\r\nContent-Type: text/plain\r\n\r\n"
        b"Pay at\r\n https://pay.attacker.example/ <ann@example.org>",
    ),
    "extra-header": lambda d: d.replace(
        b"\r\nSubject:", b"\r\nBcc: x@attacker.example\r\nSubject:"
    ),
    "bare-lf": lambda d: d.replace(b"Subject: Weekly", b"Subject: Weekly\nBcc: x@attacker.example"),
    "bare-cr": lambda d: d.replace(b"Subject: Weekly", b"Subject: Weekly\rBcc: x@attacker.example"),
    "nul": lambda d: d.replace(b"Subject: Weekly", b"Subject: Wee\x00kly"),
    "missing": lambda d: d.replace(b"Subject: Weekly\r\n", b""),
    "reordered": lambda d: d.replace(b"Subject: Weekly\r\n", b"").replace(
        b"MIME-Version:", b"Subject: Weekly\r\nMIME-Version:"
    ),
    "not-a-header": lambda d: d.replace(b"Subject: Weekly", b"Subject Weekly"),
    "leading-fold": lambda d: b" folded\r\n" + d,
    "no-blank-line": lambda d: d.replace(b"\r\n\r\n", b"\r\n"),
}


@pytest.mark.parametrize("forge", FORGED.values(), ids=FORGED.keys())
def test_the_verifier_refuses_a_forged_header_block(forge: Callable[[bytes], bytes]) -> None:
    data, names = good_message()
    forged = forge(data)
    assert forged != data
    with pytest.raises(UnsafeHeaderValue):
        mailer.delivery.message.verify_header_block(forged, names)


# ---------------------------------------------------------------- Message-IDs


def test_message_ids_differ_after_a_database_reset(settings: Settings, runtime, tmp_path: Path):
    """The same campaign and delivery ids come again after a reset (or in a staging copy);
    a receiver that saw the old Message-ID would drop the new message as a duplicate."""
    ids: list[set[str]] = []
    for install in ("before", "after"):
        url = f"sqlite:///{tmp_path / install}.db"
        engine = make_engine(url)
        upgrade(engine)
        engine.dispose()
        folder = tmp_path / install
        rt = runtime(settings, database_url=url, outbox_dir=folder)
        seed(rt, "Victim Reader")
        send_campaign(rt, tmp_path)
        messages = outbox_messages(folder)
        assert sorted(p.name for p in folder.glob("*.eml")) == ["1-1.eml", "1-2.eml"]
        ids.append({m["Message-ID"] for m in messages.values()})
        assert len(ids[-1]) == 2
    assert ids[0].isdisjoint(ids[1])


# ---------------------------------------------------------------- lint


@pytest.fixture
def edition(renderer: Renderer, write_post) -> Edition:
    return renderer.render(load_post(write_post("---\ntitle: Fine\n---\nA plain body.\n")))


@pytest.mark.parametrize(
    ("changes", "code", "field"),
    [
        ({"subject": ATTACK}, "unsafe-subject", "'subject'"),
        ({"subject": "Weekly\x85Bcc: x@attacker.example"}, "unsafe-subject", "'subject'"),
        ({"title": "Weekly\rX", "subject": "Weekly\rX"}, "unsafe-subject", "title"),
        ({"preheader": ATTACK}, "unsafe-preheader", "preheader"),
        ({"preheader": "Read\u2028on"}, "unsafe-preheader", "preheader"),
    ],
)
def test_lint_names_a_field_that_would_break_a_header(
    edition: Edition, settings: Settings, changes: dict[str, str], code: str, field: str
) -> None:
    findings = [f for f in lint(dataclasses.replace(edition, **changes), settings)]
    [finding] = [f for f in findings if f.code == code]
    assert finding.severity == "error" and field in finding.message
    assert not any(f.code.startswith("unsafe-") for f in lint(edition, settings))
