"""Dot-stuffing (RFC 5321 4.5.2): a line of the message that starts with a dot reaches the
server as written, whether the text has such lines or not; one alone on its line does not
end the message early."""

from __future__ import annotations

import pytest

from mailer.delivery.message import Batch, Envelope, Sender
from mailer.delivery.smtp import SmtpBackend
from tests.test_smtp import Mailbox, smtp_sink


@pytest.mark.parametrize(
    "text",
    [
        ".NET and .py files\n.\n..two dots\nthe end.",
        "no line here starts with a dot.\nnor here. .",
    ],
)
def test_lines_that_start_with_a_dot_arrive_as_written(text: str) -> None:
    mailbox = Mailbox(set())
    reader = Envelope("ann@example.org", "Ann", "1-1", "https://u.example/un/1")
    batch = Batch("Dots", "<p>dots</p>", text, Sender("news@example.com", "News"), (reader,))
    with smtp_sink(mailbox) as port:
        smtp = SmtpBackend("127.0.0.1", port, "none")
        assert [o.status for o in smtp.send(batch)] == ["sent"]
        smtp.close()
    message = mailbox.by_recipient()["ann@example.org"].message()
    part = message.get_body(("plain",))
    assert part is not None
    assert part.get_content().replace("\r\n", "\n").rstrip("\n") == text
