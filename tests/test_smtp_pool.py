"""The SMTP backend's kept connections, against a real aiosmtpd server on loopback.

A process keeps its connections from batch to batch; a server that closes one (after as
many messages as it takes on a connection) has the message go out on a new one at once,
not "unknown", not a retry of the batch; a batch goes out over several connections.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator

import pytest

from mailer.delivery.message import Batch, Envelope, Sender
from mailer.delivery.smtp import SmtpBackend
from tests.test_smtp import smtp_sink


class Sessions:
    """Accepts every message, counts them by connection, and closes a connection at the
    MAIL FROM after ``limit`` messages on it (0: never)."""

    def __init__(self) -> None:
        self.limit = 0
        self.seconds = 0.0  # to answer each message
        self.per_session: Counter[int] = Counter()
        self.received: list[str] = []

    async def handle_MAIL(self, server, session, envelope, address, mail_options) -> str:
        if self.limit and self.per_session[id(session)] >= self.limit:
            server.transport.close()
            return "421 4.7.0 too many messages on one connection"
        envelope.mail_from = address
        return "250 OK"

    async def handle_DATA(self, server, session, envelope) -> str:
        await asyncio.sleep(self.seconds)
        self.per_session[id(session)] += 1
        self.received.extend(envelope.rcpt_tos)
        return "250 OK"


@pytest.fixture
def server() -> Iterator[tuple[Sessions, int]]:
    handler = Sessions()
    with smtp_sink(handler) as port:
        yield handler, port


def batch(first: int, count: int) -> Batch:
    envelopes = tuple(
        Envelope(f"reader{i}@example.org", f"Reader {i}", f"1-{i}", f"https://u.example/{i}")
        for i in range(first, first + count)
    )
    return Batch("Weekly", "<p>hi</p>", "hi", Sender("news@example.com", "News"), envelopes)


def backend(port: int, connections: int) -> SmtpBackend:
    return SmtpBackend("127.0.0.1", port, "none", connections=connections)


def test_one_connection_carries_batch_after_batch(server: tuple[Sessions, int]) -> None:
    handler, port = server
    smtp = backend(port, connections=1)
    for first in (0, 3):
        assert {o.status for o in smtp.send(batch(first, 3))} == {"sent"}
    smtp.close()
    assert list(handler.per_session.values()) == [6]


def test_a_connection_the_server_closes_is_replaced_before_the_message(
    server: tuple[Sessions, int],
) -> None:
    handler, port = server
    handler.limit = 2
    smtp = backend(port, connections=1)
    outcomes = smtp.send(batch(0, 5))
    assert [o.status for o in outcomes] == ["sent"] * 5
    assert sorted(handler.received) == [f"reader{i}@example.org" for i in range(5)]
    assert sorted(handler.per_session.values()) == [1, 2, 2]
    assert smtp.per_connection == 2  # learnt: later connections are renewed before the limit
    smtp.send(batch(5, 2))
    smtp.close()
    assert sorted(handler.per_session.values()) == [1, 2, 2, 2]


def test_a_batch_goes_out_over_several_connections(server: tuple[Sessions, int]) -> None:
    handler, port = server
    handler.seconds = 0.01  # each connection is ready long before the batch is done
    smtp = backend(port, connections=3)
    outcomes = smtp.send(batch(0, 30))
    smtp.close()
    assert [o.key for o in outcomes] == [f"1-{i}" for i in range(30)]
    assert {o.status for o in outcomes} == {"sent"}
    assert sorted(handler.received) == sorted(f"reader{i}@example.org" for i in range(30))
    assert len(handler.per_session) == 3
