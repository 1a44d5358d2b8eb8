"""SendGrid's signed Event Webhook over real HTTP against the live app, on SQLite and PostgreSQL.

A P-256 key pair is made in each test; the live app gets the public half (base64 DER) as
``sendgrid_webhook_key`` and the test signs ``timestamp + body`` as SendGrid does. Only a
genuine, fresh request changes anything; the rest get 403 (or 400 for a genuine but
malformed body) and leave the events table as it was.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import pytest
from sqlalchemy.orm import sessionmaker

from mailer.tracking.events import EventKind
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
    suppression_reason,
)
from tests.live_server import LiveServer, server_factory

start_server = server_factory()


@pytest.fixture
def key() -> WebhookKey:
    return WebhookKey()


@pytest.fixture
def server(start_server: Callable[..., LiveServer], key: WebhookKey) -> LiveServer:
    return start_server(sendgrid_webhook_key=key.public_b64)


def batch() -> list[dict]:
    return [
        sg_event("processed", "ada@example.org", "1-1"),
        sg_event("delivered", "ada@example.org", "1-1", response="250 OK"),
        sg_event("open", "ada@example.org", "1-1", sg_machine_open=False, useragent="Mail"),
        sg_event("click", "ada@example.org", "1-1", url="https://example.org/story"),
    ]


def assert_refused(response, sessions: sessionmaker, before: int = 0) -> None:
    assert response.status_code == 403, response.text
    assert "location" not in response.headers
    assert count_events(sessions) == before


# ---------------------------------------------------------------- genuine requests


def test_a_valid_signed_batch_is_stored(server: LiveServer, key: WebhookKey, sessions) -> None:
    events = batch()
    response = post_events(server.url, events, key)
    assert response.status_code == 200, response.text
    assert response.json() == {"received": 4, "new": 4}
    stored = events_of(sessions)
    assert [e.kind for e in stored] == ["processed", "delivered", "opened", "clicked"]
    assert [e.provider_event_id for e in stored] == [e["sg_event_id"] for e in events]
    assert {(e.campaign_id, e.delivery_id, e.source) for e in stored} == {(1, 1, "sendgrid")}
    # The raw payload is kept as it came.
    assert stored[3].detail == events[3]
    assert stored[1].at.timestamp() == events[1]["timestamp"]


def test_a_tampered_body_is_refused(server: LiveServer, key: WebhookKey, sessions) -> None:
    body = encode(batch())
    headers = key.headers(body)
    tampered = body.replace(b"ada@example.org", b"eve@example.org")
    assert_refused(post_events(server.url, tampered, None, headers=headers), sessions)
    # One byte added at the end is a different body too.
    assert_refused(post_events(server.url, body + b" ", None, headers=headers), sessions)


def test_a_request_signed_with_another_key_is_refused(server: LiveServer, sessions) -> None:
    assert_refused(post_events(server.url, batch(), WebhookKey()), sessions)


def test_a_signature_for_another_timestamp_is_refused(
    server: LiveServer, key: WebhookKey, sessions
) -> None:
    body = encode(batch())
    now = int(time.time())
    headers = key.headers(body, str(now - 5))
    headers[TIMESTAMP] = str(now)  # fresh, but not what was signed
    assert_refused(post_events(server.url, body, None, headers=headers), sessions)


def test_an_old_or_far_future_timestamp_is_refused(
    server: LiveServer, key: WebhookKey, sessions
) -> None:
    window = server.settings.webhook_replay_seconds
    old = str(int(time.time()) - window - 30)
    assert_refused(post_events(server.url, batch(), key, timestamp=old), sessions)
    future = str(int(time.time()) + window + 30)
    assert_refused(post_events(server.url, batch(), key, timestamp=future), sessions)
    # Within the window it is accepted.
    recent = str(int(time.time()) - window // 2)
    assert post_events(server.url, batch(), key, timestamp=recent).status_code == 200


def test_missing_headers_are_refused(server: LiveServer, key: WebhookKey, sessions) -> None:
    body = encode(batch())
    signed = key.headers(body)
    assert_refused(post_events(server.url, body, None), sessions)
    only_signature = {SIGNATURE: signed[SIGNATURE]}
    assert_refused(post_events(server.url, body, None, headers=only_signature), sessions)
    only_timestamp = {TIMESTAMP: signed[TIMESTAMP]}
    assert_refused(post_events(server.url, body, None, headers=only_timestamp), sessions)
    empty = {SIGNATURE: "", TIMESTAMP: ""}
    assert_refused(post_events(server.url, body, None, headers=empty), sessions)


@pytest.mark.parametrize(
    "signature",
    ["not base64 at all!", "AAAA", "MEUCIQ==", "%%%%"],
    ids=["garbage", "short", "truncated-der", "percent"],
)
def test_a_garbage_signature_is_refused_not_a_crash(
    server: LiveServer, sessions, signature: str
) -> None:
    headers = {SIGNATURE: signature, TIMESTAMP: str(int(time.time()))}
    assert_refused(post_events(server.url, batch(), None, headers=headers), sessions)


@pytest.mark.parametrize(
    "timestamp",
    ["soon", "1e9", "99999999999999999999999", "1000000000000000000", "-1000000000000000000"],
)
def test_a_nonsense_timestamp_is_refused_not_a_crash(
    server: LiveServer, sessions, timestamp: str
) -> None:
    """Unauthenticated input: whatever the timestamp header says, a forged request gets 403."""
    headers = {SIGNATURE: "MEUCIQ==", TIMESTAMP: timestamp}
    assert_refused(post_events(server.url, batch(), None, headers=headers), sessions)


def test_without_a_key_every_request_is_refused(
    start_server: Callable[..., LiveServer], sessions, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="mailer.web"):
        server = start_server(sendgrid_webhook_key="")
    assert any("MAILER_SENDGRID_WEBHOOK_KEY" in r.getMessage() for r in caplog.records)
    someone = WebhookKey()
    assert_refused(post_events(server.url, batch(), someone), sessions)
    assert_refused(post_events(server.url, batch(), None), sessions)
    assert_refused(post_events(server.url, b"{not json", someone), sessions)


# ---------------------------------------------------------------- stored once


def test_a_replayed_batch_is_stored_once(server: LiveServer, key: WebhookKey, sessions) -> None:
    body = encode(batch())
    first = post_events(server.url, body, key)
    assert first.json() == {"received": 4, "new": 4}
    # SendGrid retries the same events, signed afresh.
    time.sleep(1.1)
    again = post_events(server.url, body, key)
    assert again.status_code == 200, again.text
    assert again.json() == {"received": 4, "new": 0}
    # The very same request twice (same signature and timestamp) changes nothing either.
    headers = key.headers(body)
    assert post_events(server.url, body, None, headers=headers).json()["new"] == 0
    assert post_events(server.url, body, None, headers=headers).json()["new"] == 0
    assert count_events(sessions) == 4


def test_a_replayed_bounce_counts_once(server: LiveServer, key: WebhookKey, sessions) -> None:
    seed(sessions, ["soft@example.org"])
    bounce = sg_event("bounce", "soft@example.org", status="4.2.2", type="bounce")
    for _ in range(3):
        assert post_events(server.url, [bounce], key).status_code == 200
    assert subscriber(sessions, "soft@example.org").soft_bounces == 1
    assert subscriber(sessions, "soft@example.org").status == "confirmed"
    assert count_events(sessions) == 1


def test_an_event_repeated_within_one_batch_is_stored_and_applied_once(
    server: LiveServer, key: WebhookKey, sessions
) -> None:
    """SendGrid may put the same event twice in one POST; it must count once."""
    seed(sessions, ["soft@example.org"])
    bounce = sg_event("bounce", "soft@example.org", status="4.2.2", type="bounce")
    response = post_events(server.url, [bounce, dict(bounce)], key)
    assert response.status_code == 200, response.text
    assert count_events(sessions) == 1
    assert subscriber(sessions, "soft@example.org").soft_bounces == 1
    assert response.json() == {"received": 2, "new": 1}


def test_a_bounce_naming_no_campaign_beside_one_naming_ours_is_no_crash(
    server: LiveServer, key: WebhookKey, sessions
) -> None:
    """Mail sent through the same SendGrid account by something else names no campaign."""
    bounces = [
        sg_event("bounce", "ada@example.org", "1-1", status="5.1.1", type="bounce"),
        sg_event("bounce", "bob@example.org", status="5.1.1", type="bounce"),
    ]
    response = post_events(server.url, bounces, key)
    assert response.status_code == 200, response.text
    assert response.json() == {"received": 2, "new": 2}


# ---------------------------------------------------------------- genuine but odd


@pytest.mark.parametrize(
    "body",
    [b'[{"event": "delivered",', b"not json", b"", b'{"event": "delivered"}', b"42"],
    ids=["truncated", "text", "empty", "object", "number"],
)
def test_a_malformed_signed_body_is_a_400(
    server: LiveServer, key: WebhookKey, sessions, body: bytes
) -> None:
    response = post_events(server.url, body, key)
    assert response.status_code == 400, response.text
    assert count_events(sessions) == 0


def test_unknown_event_types_are_stored_as_unknown(
    server: LiveServer, key: WebhookKey, sessions
) -> None:
    events = [
        sg_event("group_resubscribe", "ada@example.org", "1-1"),
        sg_event("something_new", "ada@example.org"),
        sg_event("", "ada@example.org"),
        {**sg_event("delivered", "ada@example.org", "x-y"), "timestamp": "yesterday"},
        {"event": ["processed"], "sg_event_id": "odd-1", "email": 7},
    ]
    response = post_events(server.url, [*events, "not an object", 3], key)
    assert response.status_code == 200, response.text
    stored = {e.provider_event_id: e for e in events_of(sessions)}
    assert len(stored) == 5
    assert stored[events[0]["sg_event_id"]].kind == EventKind.UNKNOWN
    assert stored[events[1]["sg_event_id"]].kind == EventKind.UNKNOWN
    assert stored[events[2]["sg_event_id"]].kind == EventKind.UNKNOWN
    assert stored["odd-1"].kind == EventKind.UNKNOWN
    odd_delivery = stored[events[3]["sg_event_id"]]
    assert odd_delivery.kind == EventKind.DELIVERED
    assert (odd_delivery.campaign_id, odd_delivery.delivery_id) == (None, None)
    assert stored[events[0]["sg_event_id"]].detail["event"] == "group_resubscribe"


@pytest.mark.parametrize("timestamp", [10**18, -(10**18), 10**30, 1e300])
def test_an_event_with_an_absurd_timestamp_is_no_crash(
    server: LiveServer, key: WebhookKey, sessions, timestamp: float
) -> None:
    event = {**sg_event("delivered", "ada@example.org", "1-1"), "timestamp": timestamp}
    response = post_events(server.url, [event], key)
    assert response.status_code == 200, response.text
    assert count_events(sessions, kind="delivered") == 1


def test_bounces_and_complaints_suppress_and_a_block_does_not(
    server: LiveServer, key: WebhookKey, sessions
) -> None:
    """A block (5.7.x, refused by policy) is about our mail, not the address: counted, kept."""
    seed(sessions, ["hard@example.org", "block@example.org", "spam@example.org"])
    response = post_events(
        server.url,
        [
            sg_event("bounce", "hard@example.org", status="5.1.1", type="bounce"),
            sg_event("bounce", "block@example.org", status="5.7.1", type="blocked"),
            sg_event("spamreport", "spam@example.org"),
        ],
        key,
    )
    assert response.status_code == 200, response.text
    assert subscriber(sessions, "hard@example.org").status == "bounced"
    assert subscriber(sessions, "block@example.org").status == "confirmed"
    assert subscriber(sessions, "spam@example.org").status == "complained"
    assert suppression_reason(sessions, "hard@example.org") == "bounced"
    assert suppression_reason(sessions, "block@example.org") is None
    assert suppression_reason(sessions, "spam@example.org") == "complained"
