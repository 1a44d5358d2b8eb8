"""Identity headers on every backend, and the identity checks at start.

List mail carries ``List-Id`` (RFC 2919) and a ``Feedback-ID`` naming its campaign;
a confirmation carries ``Feedback-ID`` but is no list mail. The outbox file and the
SendGrid request (checked against SendGrid's schema by the stand-in) say the same.
A From at a mailbox provider is refused for real backends; a DKIM or bounce domain
outside the From's organizational domain is warned of.
"""

from __future__ import annotations

import email
import email.policy
import logging
from email.message import EmailMessage
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from mailer.config import Settings
from mailer.delivery.alignment import freemail, organizational_domain
from mailer.delivery.identity import Identity
from mailer.delivery.message import Batch, Envelope, Sender, feedback_headers, list_headers
from mailer.delivery.sendgrid import build_request
from mailer.errors import ConfigError
from mailer.runtime import Runtime
from testkit.sendgrid_standin import API_KEY, SendGridStandIn, copy_headers
from tests.test_dkim import write_key

SENDER = Sender("news@mail.example.co.uk", "AI 周报")
LIST_COPY = Envelope("ada@example.org", "Ada", "7-1", unsubscribe_url="https://m.example/u/1")
CONFIRMATION = Envelope("bob@example.org", "", "confirm-2-abc")


def identity_settings(settings: Settings, **changes: object) -> Settings:
    values = {
        "publication_name": 'AI 周报 "Weekly"',
        "sender_email": SENDER.email,
        "reply_to": "editor@example.co.uk",
        **changes,
    }
    return settings.model_copy(update=values)


def outbox_message(settings: Settings, envelope: Envelope, category: str) -> EmailMessage:
    backend = Runtime(settings).backend
    batch = Batch("Weekly", "<p>hi</p>", "hi", SENDER, (envelope,), category=category)
    [outcome] = backend.send(batch)
    data = (settings.outbox_dir / outcome.provider_id).read_bytes()
    return email.message_from_bytes(data, policy=email.policy.default)


def test_the_outbox_copy_names_its_list_campaign_and_reply_address(
    settings: Settings, tmp_path: Path
) -> None:
    s = identity_settings(settings, outbox_dir=tmp_path / "outbox")
    message = outbox_message(s, LIST_COPY, "2026-02-06-ai-weekly")
    # The name survives quoting and encoding; the id is ASCII, under the From domain.
    assert message["List-Id"] == 'AI 周报 "Weekly" <ai-weekly.mail.example.co.uk>'
    assert not message["List-Id"].defects
    assert message["Feedback-ID"] == "2026-02-06-ai-weekly:ai-weekly:newsletter"
    assert message["Reply-To"] == "editor@example.co.uk"
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"

    notice = outbox_message(s, CONFIRMATION, "")
    assert "List-Id" not in notice and "List-Unsubscribe" not in notice
    assert notice["Feedback-ID"] == "notice:ai-weekly:newsletter"


def test_the_sendgrid_request_carries_the_same_identity(settings: Settings) -> None:
    with SendGridStandIn() as standin:
        s = identity_settings(
            settings, backend="sendgrid", sendgrid_api_key=API_KEY, sendgrid_host=standin.url
        )
        batch = Batch("Weekly", "<p>hi</p>", "hi", SENDER, (LIST_COPY,), category="c-1")
        [outcome] = Runtime(s).backend.send(batch)
    assert outcome.status == "sent", standin.invalid
    [body] = standin.requests
    assert body["headers"]["Feedback-ID"] == "c-1:ai-weekly:newsletter"
    assert body["reply_to"] == {"email": "editor@example.co.uk"}
    list_id = copy_headers(body)[0]["List-Id"]
    assert list_id.isascii() and list_id.endswith(" <ai-weekly.mail.example.co.uk>")
    assert str(email.policy.default.header_factory("List-Id", list_id)).startswith("AI 周报")


@pytest.mark.parametrize("list_copies", [2, 1])
def test_each_sendgrid_copy_gets_the_headers_to_mime_writes(
    settings: Settings, list_copies: int
) -> None:
    """Headers alike on every copy go once, at the request's level (the request is mostly
    personalizations); each copy still gets exactly its own ``list_headers``, whether or not
    every copy in the batch is list mail."""
    identity = Identity.of(identity_settings(settings))
    second = Envelope("cy@example.org", "Cy", "7-2", unsubscribe_url="https://m.example/u/2")
    envelopes = (LIST_COPY, second if list_copies == 2 else CONFIRMATION)
    batch = Batch("Weekly", "<p>hi</p>", "hi", SENDER, envelopes, category="c-1")
    body = build_request(batch, identity)
    expected = [
        list_headers(batch, e, identity) | feedback_headers(batch, identity) for e in envelopes
    ]
    assert copy_headers(body) == expected
    if list_copies == 2:
        assert [p["headers"] for p in body["personalizations"]] == [
            {"List-Unsubscribe": "<https://m.example/u/1>"},
            {"List-Unsubscribe": "<https://m.example/u/2>"},
        ]


@pytest.mark.parametrize("backend", ["smtp", "sendgrid"])
def test_a_freemail_from_is_refused_for_real_backends(settings: Settings, backend: str) -> None:
    s = settings.model_copy(
        update={"backend": backend, "sender_email": "me@yahoo.co.jp", "sendgrid_api_key": "x"}
    )
    with pytest.raises(ConfigError, match=r"MAILER_SENDER_EMAIL=me@yahoo.co.jp: yahoo.co.jp"):
        assert Runtime(s).backend
    # The outbox sends nowhere: a local trial may keep a freemail From.
    assert Runtime(s.model_copy(update={"backend": "outbox"})).backend


def test_misaligned_dkim_and_bounce_domains_are_warned_of(
    settings: Settings, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write_key(tmp_path / "dkim.pem", rsa.generate_private_key(65537, 2048))
    s = settings.model_copy(
        update={
            "backend": "smtp",
            "sender_email": "news@example.co.uk",
            "dkim_private_key_file": tmp_path / "dkim.pem",
            "dkim_domain": "mail.example.co.uk",  # aligned: the same organizational domain
            "bounce_domain": "bounces.example.com",  # not: another one
        }
    )
    with caplog.at_level(logging.WARNING, logger="mailer.delivery.alignment"):
        assert Runtime(s).backend
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1
    assert warnings[0].startswith("MAILER_BOUNCE_DOMAIN=bounces.example.com is not aligned")
    assert "example.co.uk" in warnings[0]

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="mailer.delivery.alignment"):
        assert Runtime(
            s.model_copy(update={"dkim_domain": "example.net", "bounce_domain": ""})
        ).backend
    [warning] = [r.getMessage() for r in caplog.records]
    assert warning.startswith("MAILER_DKIM_DOMAIN=example.net is not aligned")


def test_organizational_domains_come_from_the_public_suffix_list() -> None:
    assert organizational_domain("a.b.example.co.uk") == "example.co.uk"
    assert organizational_domain("News.Example.COM.") == "example.com"
    assert freemail("vip.qq.com") and freemail("hotmail.fr") and freemail("gmx.de")
    assert not freemail("example.com") and not freemail("gmail-news.example.com")
