"""SMTP into a real aiosmtpd server on loopback, with the real web app taking the unsubscribes.

What the server receives parses as a reader's mail program would parse it: both parts
(text first), the list headers, a unique Message-ID, a DKIM signature that verifies,
and an unsubscribe link that works for that reader only.
"""

from __future__ import annotations

import base64
import email
import email.policy
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path

import dkim
import httpx
import pytest
import uvicorn
from aiosmtpd.controller import Controller
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy import select

from mailer.config import Settings
from mailer.content.post import load_post
from mailer.content.render import Renderer
from mailer.errors import TokenError
from mailer.runtime import Runtime
from mailer.sending.dispatch import InlineQueue, create_campaign, progress, start
from mailer.store.ledger import Delivery, DeliveryState
from mailer.tokens import Purpose, Signer
from mailer.web import create_app
from subscribers import store
from subscribers.models import Status, Subscriber

SENDER = "newsletter@example.com"
REFUSED = "nosuch@example.org"
SECRET = "test-secret-for-the-smtp-tests-long-enough"
POST = """---
title: SMTP weekly
---
Hello from the SMTP test, with [a link](https://example.org/story).
"""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def smtp_sink(handler: object, controller_class: type[Controller] = Controller) -> Iterator[int]:
    """aiosmtpd on a free loopback port, handing each session to ``handler``; yields the
    port, and stops the server however the block ends."""
    port = free_port()
    controller = controller_class(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield port
    finally:
        controller.stop()


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes

    def message(self) -> EmailMessage:
        return email.message_from_bytes(self.data, policy=email.policy.default)


class Mailbox:
    """An aiosmtpd handler that keeps every envelope and refuses some recipients."""

    def __init__(self, refuse: set[str]) -> None:
        self.refuse = refuse
        self.received: list[Received] = []
        self.lock = threading.Lock()
        # Temporary refusals: address -> how many more times to answer "try later".
        self.greylist: dict[str, int] = {}
        self.busy_data: dict[str, int] = {}

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options) -> str:
        if address in self.refuse:
            return "550 no such user"
        if self.greylist.get(address):
            self.greylist[address] -= 1
            return "451 4.7.1 greylisted, try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope) -> str:
        for address in envelope.rcpt_tos:
            if self.busy_data.get(address):
                self.busy_data[address] -= 1
                return "421 4.3.2 too busy, try again later"
        with self.lock:
            self.received.append(
                Received(envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content)
            )
        return "250 Message accepted for delivery"

    def by_recipient(self) -> dict[str, Received]:
        with self.lock:
            out: dict[str, Received] = {}
            for item in self.received:
                for rcpt in item.rcpt_tos:
                    assert rcpt not in out, f"{rcpt} got two messages"
                    out[rcpt] = item
            return out


@pytest.fixture
def mailbox() -> Iterator[tuple[Mailbox, int]]:
    handler = Mailbox({REFUSED})
    with smtp_sink(handler) as port:
        yield handler, port


@pytest.fixture
def web_port() -> int:
    return free_port()


def smtp_settings(
    settings: Settings, database_url: str, smtp_port: int, web_port: int, **extra: object
) -> Settings:
    return settings.model_copy(
        update={
            "database_url": database_url,
            "backend": "smtp",
            "smtp_host": "127.0.0.1",
            "smtp_port": smtp_port,
            "smtp_security": "none",
            "public_url": f"http://127.0.0.1:{web_port}",
            "secret_keys": [SECRET],
            "sender_email": SENDER,
            "batch_size": 3,
            **extra,
        }
    )


@pytest.fixture
def web(settings: Settings, database_url: str, web_port: int) -> Iterator[str]:
    """The real web app, served by uvicorn on loopback, before anything is sent."""
    app_settings = smtp_settings(settings, database_url, 25, web_port)
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(Runtime(app_settings)), host="127.0.0.1", port=web_port, log_level="warning"
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    for _ in range(500):
        if server.started:
            break
        time.sleep(0.01)
    assert server.started, "uvicorn did not start"
    try:
        yield app_settings.public_url
    finally:
        server.should_exit = True
        thread.join(10)


def seed(rt: Runtime, emails: list[str]) -> dict[str, int]:
    consent = store.Consent(source="test", text="test")
    ids = {}
    with rt.sessions.begin() as session:
        for address in emails:
            subscriber = store.add(session, address, consent, status=Status.CONFIRMED).subscriber
            assert subscriber is not None
            ids[address] = subscriber.id
        store.add(session, "pending@example.org", consent, status=Status.PENDING)
    return ids


def send(rt: Runtime, tmp_path: Path, post: str = POST) -> int:
    path = tmp_path / "smtp-weekly.md"
    path.write_text(post, "utf-8")
    campaign, new = create_campaign(rt, Renderer(rt.settings).render(load_post(path)), path)
    assert new
    queue = InlineQueue(rt)
    queue.sleep = lambda seconds: None
    assert start(rt, campaign.id, queue)
    return campaign.id


def deliveries(rt: Runtime, campaign_id: int) -> dict[int, Delivery]:
    with rt.sessions() as session:
        rows = session.scalars(select(Delivery).where(Delivery.campaign_id == campaign_id))
        return {row.subscriber_id: row for row in rows}


def unsubscribe_link(message: EmailMessage) -> str:
    links = re.findall(r"<(http[^>]+)>", message["List-Unsubscribe"])
    assert len(links) == 1
    return links[0]


def unsubscribe_token_subscriber(signer: Signer, token: str) -> int:
    """The subscriber id an unsubscribe token carries, checked with the project's Signer (the
    compact ``sign_ids`` form where the Signer has it, else the ``sign`` form)."""
    if hasattr(signer, "verify_ids"):
        try:
            return signer.verify_ids(Purpose.UNSUBSCRIBE, token, 1)[0]
        except TokenError:
            pass
    return signer.verify(Purpose.UNSUBSCRIBE, token)


READERS = [f"reader{i}@example.org" for i in range(5)]


def test_smtp_messages_parse_and_their_unsubscribe_links_work(
    settings: Settings,
    runtime: Callable[[Settings], Runtime],
    database_url: str,
    mailbox: tuple[Mailbox, int],
    web: str,
    web_port: int,
    tmp_path: Path,
) -> None:
    handler, smtp_port = mailbox
    rt = runtime(
        smtp_settings(
            settings, database_url, smtp_port, web_port, unsubscribe_mailto="leave@example.com"
        )
    )
    ids = seed(rt, [*READERS, REFUSED])
    campaign_id = send(rt, tmp_path)

    received = handler.by_recipient()
    assert sorted(received) == sorted(READERS)  # not the pending one, not the refused one
    rows = deliveries(rt, campaign_id)
    signer = Signer([SECRET])
    links = {}
    for address in READERS:
        item = received[address]
        assert item.mail_from == SENDER
        message = item.message()
        assert message.defects == []
        assert message["To"].addresses[0].addr_spec == address
        assert message["Subject"] == "SMTP weekly"
        assert message.get_content_type() == "multipart/alternative"
        parts = list(message.iter_parts())
        assert [p.get_content_type() for p in parts] == ["text/plain", "text/html"]
        text, html = parts[0].get_content(), parts[1].get_content()
        assert "Hello from the SMTP test" in text and "Hello from the SMTP test" in html

        delivery = rows[ids[address]]
        assert delivery.status == DeliveryState.SENT
        # The delivery key, made unique in the world (keys repeat after a database reset).
        assert message["Message-ID"].startswith(f"<{campaign_id}-{delivery.id}.")
        assert message["Message-ID"].endswith("@example.com>")
        assert delivery.provider_id == message["Message-ID"]
        assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert "<mailto:leave@example.com?subject=unsubscribe>" in message["List-Unsubscribe"]
        link = unsubscribe_link(message)
        assert link.startswith(f"{web}/unsubscribe/")
        assert unsubscribe_token_subscriber(signer, link.rsplit("/", 1)[1]) == ids[address]
        assert link in text and link in html
        links[address] = link
        assert "DKIM-Signature" not in message  # no key configured
    assert len(set(links.values())) == len(READERS)

    refused = rows[ids[REFUSED]]
    assert refused.status == DeliveryState.FAILED
    assert refused.error == "550 no such user"
    p = progress(rt, campaign_id)
    assert (p.status, p.sent, p.failed, p.queued) == ("sent", len(READERS), 1, 0)

    # One-click unsubscribe (RFC 8058) through the real web app, for one reader.
    leaver = READERS[2]
    response = httpx.post(
        links[leaver],
        content="List-Unsubscribe=One-Click",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    with rt.sessions() as session:
        statuses = {s.email: s.status for s in session.scalars(select(Subscriber))}
    assert statuses[leaver] == Status.UNSUBSCRIBED
    assert all(statuses[a] == Status.CONFIRMED for a in READERS if a != leaver)
    # A tampered link is refused and unsubscribes nobody.
    bad = httpx.post(links[READERS[0]] + "x", content="List-Unsubscribe=One-Click", timeout=10)
    assert bad.status_code == 400
    with rt.sessions() as session:
        assert store.find(session, READERS[0]).status == Status.CONFIRMED


def test_without_a_mailto_the_list_header_has_only_the_link(
    settings: Settings,
    runtime: Callable[[Settings], Runtime],
    database_url: str,
    mailbox: tuple[Mailbox, int],
    tmp_path: Path,
) -> None:
    handler, smtp_port = mailbox
    rt = runtime(smtp_settings(settings, database_url, smtp_port, 8000))
    seed(rt, READERS[:2])
    send(rt, tmp_path)
    for item in handler.by_recipient().values():
        header = item.message()["List-Unsubscribe"]
        assert "mailto:" not in header and header.count("<") == 1


def test_dkim_signature_verifies(
    settings: Settings,
    runtime: Callable[[Settings], Runtime],
    database_url: str,
    mailbox: tuple[Mailbox, int],
    tmp_path: Path,
) -> None:
    handler, smtp_port = mailbox
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    key_file = tmp_path / "dkim.pem"
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    public = base64.b64encode(
        key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    record = b"v=DKIM1; k=rsa; p=" + public
    asked: list[bytes] = []

    def dnsfunc(name: bytes, timeout: int = 5) -> bytes:
        asked.append(name)
        return record if name == b"news2026._domainkey.example.com." else b""

    rt = runtime(
        smtp_settings(
            settings,
            database_url,
            smtp_port,
            8000,
            dkim_private_key_file=key_file,
            dkim_domain="example.com",
            dkim_selector="news2026",
        )
    )
    seed(rt, READERS[:4])
    send(rt, tmp_path)

    received = handler.by_recipient()
    assert sorted(received) == sorted(READERS[:4])
    for item in received.values():
        message = item.message()
        signature = str(message["DKIM-Signature"])
        assert "d=example.com" in signature and "s=news2026" in signature
        signed = re.search(r"h=([^;]+)", signature.replace("\r\n", "").replace(" ", ""))
        assert signed is not None
        headers = {h.strip().lower() for h in signed.group(1).split(":")}
        assert {"from", "to", "subject", "message-id", "list-unsubscribe"} <= headers
        assert dkim.verify(item.data, dnsfunc=dnsfunc)
        # Any change to a signed part breaks it.
        tampered = item.data.replace(b"Subject: SMTP weekly", b"Subject: SMTP weekly!")
        assert tampered != item.data
        assert not dkim.verify(tampered, dnsfunc=dnsfunc)
    assert set(asked) == {b"news2026._domainkey.example.com."}


def _quick_send(rt: Runtime, tmp_path: Path) -> tuple[int, list[float]]:
    path = tmp_path / "smtp-weekly.md"
    path.write_text(POST, "utf-8")
    campaign, _ = create_campaign(rt, Renderer(rt.settings).render(load_post(path)), path)
    queue = InlineQueue(rt)
    sleeps: list[float] = []
    queue.sleep = sleeps.append
    assert start(rt, campaign.id, queue)
    return campaign.id, sleeps


def test_a_busy_server_ends_the_batch_and_the_rest_go_later(
    settings: Settings,
    runtime: Callable[[Settings], Runtime],
    database_url: str,
    mailbox: tuple[Mailbox, int],
    tmp_path: Path,
) -> None:
    """421 after DATA: that message was not taken; it and the rest of the batch are sent on
    the next try, over a new connection, and nobody gets two."""
    handler, smtp_port = mailbox
    rt = runtime(smtp_settings(settings, database_url, smtp_port, 8000))
    ids = seed(rt, READERS)
    handler.busy_data[READERS[1]] = 1
    campaign_id, sleeps = _quick_send(rt, tmp_path)

    assert sorted(handler.by_recipient()) == sorted(READERS)  # by_recipient checks no twice
    assert len(sleeps) == 1
    rows = deliveries(rt, campaign_id)
    assert all(rows[ids[a]].status == DeliveryState.SENT for a in READERS)
    assert rows[ids[READERS[0]]].attempts == 1 and rows[ids[READERS[1]]].attempts == 2
    assert progress(rt, campaign_id).status == "sent"


def test_a_greylisted_recipient_is_tried_again_not_failed(
    settings: Settings,
    runtime: Callable[[Settings], Runtime],
    database_url: str,
    mailbox: tuple[Mailbox, int],
    tmp_path: Path,
) -> None:
    """A 4xx answer to RCPT TO ("451 greylisted, try again later") is temporary: the reader
    must get the edition on a later try, not be marked failed for good."""
    handler, smtp_port = mailbox
    rt = runtime(smtp_settings(settings, database_url, smtp_port, 8000))
    ids = seed(rt, READERS)
    handler.greylist[READERS[3]] = 1
    campaign_id, _ = _quick_send(rt, tmp_path)

    rows = deliveries(rt, campaign_id)
    assert rows[ids[READERS[3]]].status == DeliveryState.SENT, rows[ids[READERS[3]]].error
    assert sorted(handler.by_recipient()) == sorted(READERS)
    assert progress(rt, campaign_id).failed == 0


def test_an_unreachable_server_is_retried_then_the_campaign_pauses(
    settings: Settings, runtime: Callable[[Settings], Runtime], database_url: str, tmp_path: Path
) -> None:
    closed = free_port()  # nothing listens there
    rt = runtime(smtp_settings(settings, database_url, closed, 8000, max_retries=3))
    seed(rt, READERS[:2])
    campaign_id, sleeps = _quick_send(rt, tmp_path)
    assert len(sleeps) == 3
    p = progress(rt, campaign_id)
    assert (p.status, p.queued, p.sent, p.failed, p.sending) == ("paused", 2, 0, 0, 0)
    assert f"cannot reach the SMTP server 127.0.0.1:{closed}" in p.last_error
