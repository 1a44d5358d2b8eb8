"""PIPELINING (RFC 2920) against a real aiosmtpd server on loopback: where the server offers
it, a message's MAIL, RCPT and DATA go out in one write, and what the server answers about
one reader is still that reader's alone, as when the commands go one by one; where it does
not offer it, they go one at a time."""

from __future__ import annotations

from contextlib import AbstractContextManager

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP

from mailer.delivery import Outcome
from mailer.delivery.message import Batch, Envelope, Sender
from mailer.delivery.smtp import SmtpBackend
from tests.test_smtp import smtp_sink

SENDER = "news@example.com"


class Script:
    """Answers MAIL (in turn, the last answer repeating), RCPT and DATA (by recipient) from
    a script, offering PIPELINING or not, and keeps what arrived in each read."""

    def __init__(self, pipelining: bool) -> None:
        self.pipelining = pipelining
        self.mail = ["250 OK"]
        self.rcpt: dict[str, str] = {}
        self.data: dict[str, str] = {}
        self.accepted: list[str] = []
        self.reads: list[bytes] = []

    async def handle_EHLO(self, server, session, envelope, hostname, responses) -> list[str]:
        session.host_name = hostname
        if self.pipelining:
            return [*responses[:-1], "250-PIPELINING", responses[-1]]
        return responses

    async def handle_MAIL(self, server, session, envelope, address, mail_options) -> str:
        answer = self.mail.pop(0) if len(self.mail) > 1 else self.mail[0]
        if answer.startswith("250"):
            envelope.mail_from = address
        return answer

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options) -> str:
        answer = self.rcpt.get(address, "250 OK")
        if answer.startswith("250"):
            envelope.rcpt_tos.append(address)
        return answer

    async def handle_DATA(self, server, session, envelope) -> str:
        (address,) = envelope.rcpt_tos
        answer = self.data.get(address, "250 OK")
        if answer.startswith("250"):
            self.accepted.append(address)
        return answer


class _Recording(SMTP):
    def data_received(self, data: bytes) -> None:
        self.event_handler.reads.append(data)
        super().data_received(data)


class _Controller(Controller):
    def factory(self) -> SMTP:
        return _Recording(self.handler, **self.SMTP_kwargs)


def server(script: Script) -> AbstractContextManager[int]:
    return smtp_sink(script, _Controller)


def readers(count: int) -> list[str]:
    return [f"reader{i}@example.org" for i in range(count)]


def send(port: int, addresses: list[str]) -> list[Outcome]:
    envelopes = tuple(
        Envelope(a, f"Reader {i}", f"1-{i}", f"https://u.example/{i}")
        for i, a in enumerate(addresses)
    )
    batch = Batch("Weekly", "<p>hi</p>", "hi", Sender(SENDER, "News"), envelopes)
    smtp = SmtpBackend("127.0.0.1", port, "none", connections=1)
    try:
        return smtp.send(batch)
    finally:
        smtp.close()


def together(address: str) -> bytes:
    return f"MAIL FROM:<{SENDER}>\r\nRCPT TO:<{address}>\r\nDATA\r\n".encode()


def test_the_commands_of_a_message_go_out_together_only_where_offered() -> None:
    for pipelining in (True, False):
        script = Script(pipelining)
        with server(script) as port:
            outcomes = send(port, readers(3))
        assert [o.status for o in outcomes] == ["sent"] * 3
        assert script.accepted == readers(3)
        assert [together(a) in script.reads for a in readers(3)] == [pipelining] * 3
        assert any(read.startswith(b"MAIL FROM:") for read in script.reads)


def test_each_answer_is_about_its_reader_alone_and_the_next_reader_goes_out() -> None:
    script = Script(pipelining=True)
    r = readers(7)
    script.rcpt = {r[0]: "550 5.1.1 user unknown", r[2]: "452 4.2.2 mailbox full"}
    script.data = {r[4]: "554 5.7.1 refused by policy"}
    script.mail = ["250 OK"] * 6 + ["553 5.7.1 sender not allowed"]
    with server(script) as port:
        outcomes = send(port, r)

    assert [(o.status, o.error, o.bounce) for o in outcomes] == [
        ("failed", "550 5.1.1 user unknown", "hard"),
        ("sent", "", ""),
        ("deferred", "452 4.2.2 mailbox full", ""),
        ("sent", "", ""),
        ("failed", "refused by policy: 554 5.7.1 refused by policy", "block"),
        ("sent", "", ""),
        ("retry", "553 5.7.1 sender not allowed", ""),  # ours: the batch ends here
    ]
    assert script.accepted == [r[1], r[3], r[5]]  # once each
    assert together(r[1]) in script.reads


def test_a_server_closing_at_a_rcpt_ends_the_batch_with_its_reason() -> None:
    script = Script(pipelining=True)
    r = readers(3)
    script.rcpt = {r[1]: "421 4.3.2 closing"}
    with server(script) as port:
        outcomes = send(port, r)

    assert [(o.status, o.error) for o in outcomes] == [
        ("sent", ""),
        ("retry", "421 4.3.2 closing"),  # not sent again on a new connection
    ]
    assert script.accepted == [r[0]]
    assert together(r[1]) in script.reads


class TakesDataAfterRefusal(Script):
    """A server that answers DATA with 354 even after refusing the only RCPT."""

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options) -> str:
        answer = await super().handle_RCPT(server, session, envelope, address, rcpt_options)
        if not answer.startswith("250"):
            envelope.rcpt_tos.append(address)  # so that its DATA answers 354
        return answer


def test_a_server_taking_data_after_a_refused_rcpt_is_left_not_taken_for_a_limit() -> None:
    """The connection we close after its 354 is not the server's limit of messages on one
    connection: later connections are not renewed after as many."""
    script = TakesDataAfterRefusal(pipelining=True)
    r = readers(4)
    script.rcpt = {r[2]: "550 5.1.1 user unknown"}
    envelopes = tuple(Envelope(a, "", f"1-{i}", f"https://u.example/{i}") for i, a in enumerate(r))
    batch = Batch("Weekly", "<p>hi</p>", "hi", Sender(SENDER, "News"), envelopes)
    with server(script) as port:
        smtp = SmtpBackend("127.0.0.1", port, "none", connections=1)
        try:
            outcomes = smtp.send(batch)
        finally:
            smtp.close()

    assert [o.status for o in outcomes] == ["sent", "sent", "failed", "sent"]
    assert script.accepted == [r[0], r[1], r[3]]
    assert smtp.per_connection == 0
