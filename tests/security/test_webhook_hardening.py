"""Issue 10: SendGrid's webhook under hostile or odd input, on SQLite and PostgreSQL.

Every answer is a clear 4xx or a fix, never a 500: an absurd timestamp header, signed
events with out-of-range ids, deep nesting, NUL or lone surrogates, requests refused
before their body is read, events naming another reader's delivery, and a signed body
without SendGrid's event ids played back.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from sqlalchemy.orm import sessionmaker

from mailer.store.ledger import Delivery, DeliveryState
from mailer.web import webhooks
from tests.event_support import (
    SIGNATURE,
    TIMESTAMP,
    WebhookKey,
    count_events,
    encode,
    events_of,
    post_events,
    seed,
    sg_event,
    subscriber,
)
from tests.live_server import LiveServer, server_factory

start_server = server_factory()


@pytest.fixture
def key() -> WebhookKey:
    return WebhookKey()


@pytest.fixture
def server(start_server: Callable[..., LiveServer], key: WebhookKey) -> LiveServer:
    return start_server(sendgrid_webhook_key=key.public_b64)


def no_crash(server: LiveServer) -> None:
    """The server logged no unhandled exception."""
    assert not [r for r in server.log if r.exc_info], [r.getMessage() for r in server.log]


def add_delivery(sessions: sessionmaker, campaign_id: int, subscriber_id: int) -> int:
    """A ledger row of ``campaign_id`` for a reader, whose outcome is unknown."""
    with sessions.begin() as session:
        row = Delivery(
            campaign_id=campaign_id,
            subscriber_id=subscriber_id,
            batch=0,
            status=DeliveryState.UNKNOWN,
        )
        session.add(row)
        session.flush()
        return row.id


def delivery_status(sessions: sessionmaker, delivery_id: int) -> str:
    with sessions() as session:
        row = session.get(Delivery, delivery_id)
        assert row is not None
        return row.status


def without_ids(*events: dict[str, Any]) -> list[dict[str, Any]]:
    return [{k: v for k, v in e.items() if k != "sg_event_id"} for e in events]


def raw_request(server: LiveServer, headers: dict[str, str], seconds: float = 5.0) -> int:
    """Send only a POST's headers (no body) and return the status of the answer; fail if
    the server waits for the body instead of answering."""
    address = urlsplit(server.url)
    lines = [
        "POST /webhooks/sendgrid HTTP/1.1",
        f"Host: {address.netloc}",
        "Content-Type: application/json",
        *(f"{name}: {value}" for name, value in headers.items()),
        "",
        "",
    ]
    with socket.create_connection((address.hostname, address.port), timeout=seconds) as sock:
        sock.sendall("\r\n".join(lines).encode())
        try:
            answer = sock.recv(65536)
        except TimeoutError:
            pytest.fail("the server waited for the body instead of refusing the request")
    return int(answer.split(b" ", 2)[1])


# ---------------------------------------------------------------- 1. the timestamp header


@pytest.mark.parametrize("digits", ["9" * 400, "1" + "0" * 399, "9" * 5000])
def test_a_400_digit_timestamp_is_refused_not_a_crash(
    server: LiveServer, key: WebhookKey, sessions, digits: str
) -> None:
    forged = {SIGNATURE: "MEUCIQ==", TIMESTAMP: digits}
    for response in (
        post_events(server.url, [sg_event("open", "a@example.org")], None, headers=forged),
        # Genuinely signed over that timestamp: still far outside the replay window.
        post_events(server.url, [sg_event("open", "a@example.org")], key, timestamp=digits),
    ):
        assert response.status_code == 403, response.text
    assert count_events(sessions) == 0
    no_crash(server)


# ---------------------------------------------------------------- 2. signed but hostile


def test_ids_beyond_64_bits_are_no_crash(server: LiveServer, key: WebhookKey, sessions) -> None:
    seed(sessions, ["hard@example.org"])
    odd = [
        sg_event("delivered", "a@example.org", f"1-{2**63}"),
        sg_event("delivered", "a@example.org", f"{2**64}-1"),
        sg_event("delivered", "a@example.org", "1-" + "9" * 400),
        sg_event("delivered", "a@example.org", "1-²"),  # a digit to str.isdigit, not to int
        sg_event("spamreport", "hard@example.org", f"1-{2**63 + 5}"),
    ]
    bounce = sg_event("bounce", "hard@example.org", status="5.1.1", type="bounce")
    response = post_events(server.url, [*odd, bounce], key)
    assert response.status_code == 200, response.text
    assert {(e.campaign_id, e.delivery_id) for e in events_of(sessions)} == {(None, None)}
    # The other events of the batch still count: the reader bounced, and complained
    # (an unusable delivery id leaves SendGrid's recipient address to go by).
    assert subscriber(sessions, "hard@example.org").status in ("bounced", "complained")
    assert count_events(sessions) == 6
    no_crash(server)


def test_a_body_nested_100k_deep_is_a_400(server: LiveServer, key: WebhookKey, sessions) -> None:
    for body in (b"[" * 100_000 + b"]" * 100_000, b'[{"a":' * 100_000 + b"1" + b"}]" * 100_000):
        response = post_events(server.url, body, key)
        assert response.status_code == 400, response.text
    assert count_events(sessions) == 0
    no_crash(server)


def test_a_deeply_nested_event_is_skipped_and_the_rest_applied(
    server: LiveServer, key: WebhookKey, sessions
) -> None:
    seed(sessions, ["hard@example.org"])
    nested: Any = "bottom"
    for _ in range(900):  # json.loads takes it; storing it again would recurse as deep
        nested = {"n": nested}
    deep = sg_event("open", "a@example.org", "1-1", extra=nested)
    bounce = sg_event("bounce", "hard@example.org", status="5.1.1", type="bounce")
    response = post_events(server.url, [deep, bounce], key)
    assert response.status_code == 200, response.text
    assert [e.provider_event_id for e in events_of(sessions)] == [bounce["sg_event_id"]]
    assert subscriber(sessions, "hard@example.org").status == "bounced"
    no_crash(server)


@pytest.mark.parametrize(
    "odd",
    [
        {"sg_event_id": "nul\u0000id"},
        {"email": "hard\u0000@example.org"},
        {"reason": "mailbox\u0000full"},
        {"category": ["weekly", "a\u0000b"]},
        {"nested": {"key\u0000": 1}},
        {"sg_event_id": "surrogate\ud800"},
        {"email": "hard\udc00@example.org"},
    ],
    ids=["event-id", "email", "reason", "list", "key", "surrogate-id", "surrogate-email"],
)
def test_nul_and_lone_surrogates_are_skipped_not_a_crash(
    server: LiveServer, key: WebhookKey, sessions, odd: dict[str, Any]
) -> None:
    """PostgreSQL text holds no NUL and UTF-8 no lone surrogate; SendGrid sends neither."""
    seed(sessions, ["hard@example.org", "spam@example.org"])
    bad = {**sg_event("bounce", "hard@example.org", status="5.1.1", type="bounce"), **odd}
    good = sg_event("spamreport", "spam@example.org")
    response = post_events(server.url, [bad, good], key)
    assert response.status_code == 200, response.text
    assert [e.provider_event_id for e in events_of(sessions)] == [good["sg_event_id"]]
    assert subscriber(sessions, "hard@example.org").status == "confirmed"
    assert subscriber(sessions, "spam@example.org").status == "complained"
    no_crash(server)


@pytest.mark.parametrize("number", [b"NaN", b"Infinity", b"-Infinity", b"1e400"])
def test_numbers_json_cannot_hold_are_skipped_not_a_crash(
    server: LiveServer, key: WebhookKey, sessions, number: bytes
) -> None:
    """Python's json reads NaN, Infinity and 1e400 (as inf); PostgreSQL's json refuses them."""
    good = sg_event("delivered", "a@example.org", "1-1")
    bad = encode([sg_event("open", "a@example.org", "1-1")])[:-2] + b',"score":' + number + b"}"
    body = bad + b"," + encode([good])[1:]
    response = post_events(server.url, body, key)
    assert response.status_code == 200, response.text
    assert [e.provider_event_id for e in events_of(sessions)] == [good["sg_event_id"]]
    no_crash(server)


# ---------------------------------------------------------------- 3. refused before the body


def test_without_a_key_the_body_is_not_read(
    start_server: Callable[..., LiveServer], sessions
) -> None:
    server = start_server(sendgrid_webhook_key="")
    signed = {SIGNATURE: "MEUCIQ==", TIMESTAMP: str(int(time.time()))}
    assert raw_request(server, {**signed, "Content-Length": "1000000"}) == 403


def test_without_both_signature_headers_the_body_is_not_read(server: LiveServer) -> None:
    now = str(int(time.time()))
    for headers in ({}, {SIGNATURE: "MEUCIQ=="}, {TIMESTAMP: now}, {SIGNATURE: "", TIMESTAMP: ""}):
        assert raw_request(server, {**headers, "Content-Length": "1000000"}) == 403


def test_a_content_length_over_the_cap_is_a_413_before_the_body(server: LiveServer) -> None:
    headers = {SIGNATURE: "MEUCIQ==", TIMESTAMP: str(int(time.time()))}
    too_long = str(webhooks.MAX_BODY + 1)
    assert raw_request(server, {**headers, "Content-Length": too_long}) == 413


def test_a_chunked_body_over_the_cap_is_a_413_while_reading(
    server: LiveServer, key: WebhookKey, sessions, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(webhooks, "MAX_BODY", 4096)
    body = encode([sg_event("open", "a@example.org", "1-1") for _ in range(100)])
    assert len(body) > 4096

    def chunks() -> Iterator[bytes]:  # no Content-Length: only the count while reading stops it
        for start in range(0, len(body), 1000):
            yield body[start : start + 1000]

    response = httpx.post(
        f"{server.url}/webhooks/sendgrid", content=chunks(), headers=key.headers(body), timeout=10
    )
    assert response.status_code == 413, response.text
    assert count_events(sessions) == 0


# ---------------------------------------------------------------- 4. another reader's delivery


def test_an_event_naming_another_readers_delivery_is_ignored(
    server: LiveServer, key: WebhookKey, sessions
) -> None:
    ids = seed(sessions, ["ada@example.org", "eve@example.org"])
    ada = add_delivery(sessions, 999, ids["ada@example.org"])
    forged = [
        sg_event("spamreport", "eve@example.org", f"999-{ada}"),
        sg_event("bounce", "eve@example.org", f"999-{ada}", status="5.1.1", type="bounce"),
        sg_event("delivered", "eve@example.org", f"999-{ada}"),
        sg_event("spamreport", "ada@example.org", f"998-{ada}"),  # another campaign's
    ]
    response = post_events(server.url, forged, key)
    assert response.status_code == 200, response.text
    assert subscriber(sessions, "ada@example.org").status == "confirmed"
    assert subscriber(sessions, "eve@example.org").status == "confirmed"
    assert delivery_status(sessions, ada) == DeliveryState.UNKNOWN
    assert count_events(sessions) == 0
    no_crash(server)


def test_an_event_whose_address_matches_its_delivery_applies(
    server: LiveServer, key: WebhookKey, sessions
) -> None:
    """SendGrid may report the address with other capitals: still the same reader."""
    ids = seed(sessions, ["ada@example.org"])
    ada = add_delivery(sessions, 999, ids["ada@example.org"])
    events = [
        sg_event("delivered", "Ada@EXAMPLE.org", f"999-{ada}"),
        sg_event("bounce", " ada@Example.Org", f"999-{ada}", status="5.1.1", type="bounce"),
    ]
    response = post_events(server.url, events, key)
    assert response.status_code == 200, response.text
    assert delivery_status(sessions, ada) == DeliveryState.SENT
    assert subscriber(sessions, "ada@example.org").status == "bounced"


# ---------------------------------------------------------------- 5. replays without event ids


def test_a_replayed_body_without_event_ids_changes_nothing(
    server: LiveServer, key: WebhookKey, sessions
) -> None:
    seed(sessions, ["soft@example.org"])
    body = encode(
        without_ids(
            sg_event("bounce", "soft@example.org", status="4.2.2", type="bounce"),
            sg_event("open", "soft@example.org", "1-1"),
        )
    )
    headers = key.headers(body)
    first = post_events(server.url, body, None, headers=headers)
    assert first.status_code == 200, first.text
    assert first.json()["new"] == 2
    # The very same request again, inside the replay window, then signed afresh (a retry).
    again = post_events(server.url, body, None, headers=headers)
    assert again.status_code == 200, again.text
    assert again.json()["new"] == 0
    time.sleep(1.1)
    assert post_events(server.url, body, key).json()["new"] == 0
    assert subscriber(sessions, "soft@example.org").soft_bounces == 1
    assert count_events(sessions) == 2
    assert count_events(sessions, kind="opened") == 1


def test_events_without_ids_in_one_body_are_told_apart(
    server: LiveServer, key: WebhookKey, sessions
) -> None:
    """Two different events without ids are two events; the same one twice is one."""
    opens = without_ids(
        sg_event("open", "a@example.org", "1-1", useragent="Mail"),
        sg_event("open", "a@example.org", "1-1", useragent="Outlook"),
    )
    response = post_events(server.url, [*opens, opens[0]], key)
    assert response.status_code == 200, response.text
    assert response.json() == {"received": 3, "new": 2}
    assert count_events(sessions, kind="opened") == 2
    assert len({e.provider_event_id for e in events_of(sessions)}) == 2


def test_the_synthetic_ids_fit_the_column(server: LiveServer, key: WebhookKey, sessions) -> None:
    event = without_ids(sg_event("open", "a@example.org", "1-1", note="x" * 5000))[0]
    assert post_events(server.url, [event], key).status_code == 200
    (stored,) = events_of(sessions)
    assert stored.provider_event_id is not None and len(stored.provider_event_id) <= 100
    assert json.loads(json.dumps(stored.detail)) == event
