"""Each reader's message spliced from a batch built once is the message the ``email``
package builds for that reader alone: the same headers, parts and contents, parsed."""

from __future__ import annotations

import email
import email.policy
import re
from email.message import EmailMessage

import pytest

from mailer.config import Settings
from mailer.delivery.identity import Identity
from mailer.delivery.message import Batch, Compiled, Envelope, Sender, to_bytes
from mailer.edition import UNSUBSCRIBE_PLACEHOLDER, VIEW_PLACEHOLDER
from mailer.errors import UnsafeHeaderValue

LONG_LINE = "word " * 40
# html, text, whether the very bytes are the same (binascii's quoted-printable breaks its
# lines elsewhere than the email package's: the same text, other bytes).
TEXTS = {
    "ascii": ("<p>Hello</p>", "Hello", True),  # 7bit
    "long-lines": (f"<p>{LONG_LINE}</p>", LONG_LINE, False),  # quoted-printable
    "chinese": ("<p>二月第一周的动态</p>" * 30, "二月第一周的动态\n" * 30, True),  # base64, 8bit
}
READERS = {
    "plain": Envelope("ann@example.org", "Ann Reader", "7-1", "https://u.example/un/1"),
    "no-name": Envelope("bob@example.org", "", "7-2", "https://u.example/un/2"),
    "quoted": Envelope("cy@example.org", "Cy O'Neil, Jr.", "7-3", "https://u.example/un/3"),
    "encoded": Envelope("di@example.org", "迪 Reader", "7-4", "https://u.example/un/4"),
    "long-link": Envelope("ed@example.org", "Ed", "7-5", "https://u.example/un/" + "t" * 120),
    "notice": Envelope("fay@example.org", "Fay", "7-6"),  # a confirmation: no list headers
    "tracked": Envelope(
        "gus@example.org", "Gus", "7-7", "https://u.example/un/7", "https://u.example/v/7",
        {"%%open%%": "https://u.example/o/7.gif"},
    ),
}  # fmt: skip


def parsed(data: bytes) -> tuple[list[tuple[str, str]], list[tuple[list[tuple[str, str]], str]]]:
    message: EmailMessage = email.message_from_bytes(data, policy=email.policy.default)
    assert message.defects == []
    boundary = message.get_boundary()  # random for each build
    headers = [
        (k, " ".join(str(v).replace(boundary, "B").split()))
        for k, v in message.items()
        if k != "Date"
    ]
    parts = [(list(p.items()), p.get_content()) for p in message.iter_parts()]
    return headers, parts


@pytest.mark.parametrize("text", TEXTS, ids=TEXTS)
def test_the_splice_is_the_message_the_email_package_builds(text: str) -> None:
    html, plain, same_bytes = TEXTS[text]
    html = f"{html} <a href='{UNSUBSCRIBE_PLACEHOLDER}'>x</a> {VIEW_PLACEHOLDER} %%open%%"
    plain = f"{plain}\n{UNSUBSCRIBE_PLACEHOLDER}\n"
    sender = Sender("news@example.com", "The Weekly 周刊")
    batch = Batch("Weekly 周报", html, plain, sender, tuple(READERS.values()), "c7", "out@x.org")
    identity = Identity.of(Settings(reply_to="reply@example.com"))
    compiled = Compiled(batch, identity)
    for envelope in batch.envelopes:
        spliced, built = compiled.to_bytes(envelope), to_bytes(batch, envelope, identity)
        assert parsed(spliced) == parsed(built), envelope.name
    if same_bytes:  # but the MIME boundary and the Date, for a reader the email package
        # writes as the splice does (no encoded name, a short link)
        random = re.compile(rb"={15}\d+==|Date: [^\r]+")
        ann = READERS["plain"]
        spliced = compiled.to_bytes(ann)
        assert random.sub(b"", spliced) == random.sub(b"", to_bytes(batch, ann, identity))


def test_the_splice_refuses_what_the_builder_refuses() -> None:
    evil = Envelope("eve@example.org", "Eve\r\nBcc: x@attacker.example", "7-9", "https://u/9")
    batch = Batch("Weekly", "<p>hi</p>", "hi", Sender("news@example.com"), (evil,))
    with pytest.raises(UnsafeHeaderValue):
        Compiled(batch).to_bytes(evil)
    forged = Envelope("eve@example.org", "Eve", "7-9", "https://u/9>\r\nBcc: x@attacker.example")
    with pytest.raises(UnsafeHeaderValue):
        Compiled(batch).to_bytes(forged)
