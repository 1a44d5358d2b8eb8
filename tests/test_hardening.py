"""Edges found in review: each once broke a send, a page or a command."""

from __future__ import annotations

import socket
import threading

import pytest

from mailer.config import load_settings
from mailer.content.post import load_post
from mailer.delivery.message import Batch, Envelope, Sender
from mailer.delivery.sendgrid import SendGridBackend, build_request
from mailer.errors import (
    ConfigError,
    PostError,
    TransientDeliveryError,
    UncertainDeliveryError,
)
from mailer.runtime import Runtime
from mailer.tracking.sendgrid import SendGridWebhook
from testkit.sendgrid_standin import API_KEY, SendGridStandIn

BATCH = Batch(
    subject="s",
    html="<p>hi</p>",
    text="hi",
    sender=Sender("news@example.org", "News"),
    envelopes=(Envelope("a@example.org", "Smith, John;Jr", "1-1"),),
)


def test_a_slug_that_cannot_be_a_url_is_refused(write_post) -> None:
    with pytest.raises(PostError, match=r"slug 'my post' .* must be ASCII"):
        load_post(write_post("---\ntitle: T\nslug: my post\n---\nBody\n"))
    with pytest.raises(PostError, match="slug '周报'"):
        load_post(write_post("# T\n\nBody\n", name="周报.md"))


def test_sendgrid_names_lose_commas_and_semicolons() -> None:
    to = build_request(BATCH)["personalizations"][0]["to"][0]
    assert to == {"email": "a@example.org", "name": "Smith  John Jr"}


def test_nothing_listening_is_transient() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    backend = SendGridBackend(API_KEY, f"http://127.0.0.1:{port}", timeout=5)
    with pytest.raises(TransientDeliveryError):
        backend.send(BATCH)


def test_a_request_taken_but_never_answered_is_uncertain() -> None:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()

    def swallow() -> None:
        connection, _ = server.accept()
        connection.recv(1 << 20)  # takes the request, then hangs up without an answer
        connection.close()

    thread = threading.Thread(target=swallow, daemon=True)
    thread.start()
    backend = SendGridBackend(API_KEY, f"http://127.0.0.1:{server.getsockname()[1]}", timeout=5)
    try:
        with pytest.raises(UncertainDeliveryError):
            backend.send(BATCH)
    finally:
        thread.join(5)
        server.close()


def test_a_refused_api_key_is_a_settings_error() -> None:
    with SendGridStandIn() as standin:
        backend = SendGridBackend("SG.wrong", standin.url, timeout=5)
        with pytest.raises(ConfigError, match="MAILER_SENDGRID_API_KEY"):
            backend.send(BATCH)


def test_a_malformed_webhook_key_is_named() -> None:
    with pytest.raises(ConfigError, match="MAILER_SENDGRID_WEBHOOK_KEY"):
        SendGridWebhook("not-a-key", 600)


def test_send_time_is_normalised(monkeypatch) -> None:
    monkeypatch.setenv("MAILER_SEND_TIME", "09")
    assert load_settings().send_time == "09:00"


def test_the_published_secret_is_refused_for_real_backends(monkeypatch) -> None:
    monkeypatch.setenv("MAILER_BACKEND", "sendgrid")
    monkeypatch.setenv("MAILER_SENDGRID_API_KEY", API_KEY)
    with pytest.raises(ConfigError, match="published local default"):
        assert Runtime(load_settings()).backend
