"""The whole loop after a send, on SQLite and PostgreSQL, over real HTTP.

A campaign goes through the ``sendgrid`` backend into the local SendGrid stand-in (which
checks every request against SendGrid's schema); the events SendGrid would post back are
built from what the stand-in received (each reader's address and ``delivery`` custom
argument) and POSTed, signed, to the live app's webhook. Then the stats, the suppression
list and the next campaign's audience are checked. Our own open pixel and click redirect
are followed from the links in the request, as a mail client would.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from mailer.runtime import Runtime
from mailer.sending.dispatch import InlineQueue, progress, start
from mailer.tracking.events import EventKind
from mailer.tracking.stats import campaign_stats, chart_svg
from mailer.web.tracking import PIXEL
from testkit.sendgrid_standin import API_KEY, SendGridStandIn
from tests.event_support import (
    CHROME,
    WebhookKey,
    count_events,
    events_of,
    new_campaign,
    post_events,
    seed,
    sg_event,
    subscriber,
    suppression_reason,
    wait_for,
    write_post,
)
from tests.live_server import LiveServer, server_factory

start_server = server_factory()

LINKS = ["https://example.org/story", "https://example.org/second?a=1&b=2"]
READERS = [f"reader{i}@example.org" for i in range(8)]


@pytest.fixture
def key() -> WebhookKey:
    return WebhookKey()


@pytest.fixture
def server(start_server: Callable[..., LiveServer], key: WebhookKey) -> LiveServer:
    return start_server(sendgrid_webhook_key=key.public_b64)


@pytest.fixture
def standin() -> Iterator[SendGridStandIn]:
    with SendGridStandIn() as running:
        yield running


@pytest.fixture
def make_rt(server: LiveServer, standin: SendGridStandIn) -> Iterator[Callable[..., Runtime]]:
    """Runtimes that send through the stand-in, on the live server's database and secrets."""
    made: list[Runtime] = []

    def make(**changes: Any) -> Runtime:
        settings = server.settings.model_copy(
            update={
                "backend": "sendgrid",
                "sendgrid_host": standin.url,
                "sendgrid_api_key": API_KEY,
                "broker_url": "",
                "batch_size": 3,
                **changes,
            }
        )
        made.append(Runtime(settings))
        return made[-1]

    yield make
    for rt in made:
        rt.close()


def send(rt: Runtime, post: Path, tracking: bool | None = None) -> int:
    campaign_id = new_campaign(rt, post, tracking=tracking)
    assert start(rt, campaign_id, InlineQueue(rt))
    state = progress(rt, campaign_id)
    assert state.status == "sent", state
    return campaign_id


def requests_for(standin: SendGridStandIn, slug: str) -> list[dict[str, Any]]:
    return [r for r in standin.requests if r["categories"] == [slug]]


def personalizations(standin: SendGridStandIn, slug: str) -> dict[str, dict[str, Any]]:
    """Each reader's personalization in the campaign's requests, by address."""
    found: dict[str, dict[str, Any]] = {}
    for request in requests_for(standin, slug):
        for personalization in request["personalizations"]:
            email = personalization["to"][0]["email"]
            assert email not in found, f"{email} got the campaign twice"
            found[email] = personalization
    return found


def content(request: dict[str, Any], kind: str) -> str:
    (value,) = [c["value"] for c in request["content"] if c["type"] == kind]
    return value


# ---------------------------------------------------------------- SendGrid's events


def test_events_clean_the_list_and_the_next_campaign_skips_it(
    server: LiveServer, key: WebhookKey, standin: SendGridStandIn, make_rt, sessions, tmp_path
) -> None:
    rt = make_rt()
    seed(sessions, READERS)
    first = send(rt, write_post(tmp_path, "loop-one", "Loop one", LINKS))
    assert standin.invalid == []
    sent = personalizations(standin, "loop-one")
    assert set(sent) == set(READERS)
    delivery = {email: p["custom_args"]["delivery"] for email, p in sent.items()}
    assert all(d.startswith(f"{first}-") for d in delivery.values())

    r = READERS
    limit = server.settings.soft_bounce_limit
    soft = [
        sg_event("bounce", r[5], delivery[r[5]], status="4.2.2", type="bounce", reason="full")
        for _ in range(limit)
    ]
    events = [
        *[sg_event("processed", email, delivery[email]) for email in r],
        *[sg_event("delivered", r[i], delivery[r[i]]) for i in (0, 1, 4, 6, 7)],
        sg_event("open", r[0], delivery[r[0]], sg_machine_open=False),
        sg_event("open", r[1], delivery[r[1]], sg_machine_open=True),  # Apple's prefetch
        sg_event("click", r[0], delivery[r[0]], url=LINKS[0]),
        sg_event("click", r[6], delivery[r[6]], url=LINKS[1]),
        sg_event("bounce", r[2], delivery[r[2]], status="5.1.1", type="bounce"),
        sg_event("bounce", r[3], delivery[r[3]], status="5.7.1", type="blocked"),
        sg_event("spamreport", r[4], delivery[r[4]]),
        sg_event("deferred", r[7], delivery[r[7]], response="try later"),
        *soft[:-1],
    ]
    response = post_events(server.url, events, key)
    assert response.status_code == 200, response.text
    assert response.json() == {"received": len(events), "new": len(events)}

    # One soft bounce short of the limit: counted, not suppressed.
    assert subscriber(sessions, r[5]).soft_bounces == limit - 1
    assert subscriber(sessions, r[5]).status == "confirmed"
    assert suppression_reason(sessions, r[5]) is None
    assert post_events(server.url, soft[-1:], key).json()["new"] == 1
    assert count_events(sessions) == len(events) + 1

    # r[3]'s block (5.7.1, refused by policy) is about our mail: counted, the reader kept.
    expected_status = {r[2]: "bounced", r[4]: "complained", r[5]: "bounced"}
    for email in READERS:
        status = expected_status.get(email, "confirmed")
        assert subscriber(sessions, email).status == status, email
        reason = None if status == "confirmed" else status
        assert suppression_reason(sessions, email) == reason, email

    with rt.sessions() as session:
        stats = campaign_stats(session, first)
    assert (stats.sent, stats.failed, stats.unknown) == (8, 0, 0)
    assert stats.delivered == 5
    assert (stats.opens, stats.human_opens) == (2, 1)
    assert (stats.unique_opens, stats.unique_human_opens) == (2, 1)
    assert (stats.clicks, stats.unique_clicks) == (2, 2)
    assert stats.click_through == pytest.approx(2 / 5)
    assert stats.bounces == 3  # hard, block and the soft-bounced reader, once each
    assert stats.complaints == 1
    assert stats.unsubscribes == 0

    # The next campaign (tracking off) goes to nobody the events took off the list.
    second = send(rt, write_post(tmp_path, "loop-two", "Loop two", LINKS), tracking=False)
    assert second != first
    assert set(personalizations(standin, "loop-two")) == {r[0], r[1], r[3], r[6], r[7]}
    assert progress(rt, second).sent == 5
    assert max(standin.recipients.values()) == 2  # nobody got either campaign twice
    assert standin.invalid == []

    # With tracking off: no pixel and no redirected links, in either part.
    for request in requests_for(standin, "loop-two"):
        html, text = content(request, "text/html"), content(request, "text/plain")
        for part in (html, text):
            assert "/o/" not in part and "/c/" not in part and "%%t%%" not in part
        assert f'href="{LINKS[0]}"' in html and f"[1] {LINKS[0]}" in text
        for personalization in request["personalizations"]:
            substitutions = personalization["substitutions"]
            assert set(substitutions) == {"%%unsubscribe_url%%"}  # one per reader
        assert "%%view_url%%" not in html and "/archive/loop-two" in html  # one for all


def test_tracking_off_globally_sends_plain_links(
    standin: SendGridStandIn, make_rt, sessions, tmp_path
) -> None:
    rt = make_rt(tracking=False)
    seed(sessions, READERS[:2])
    send(rt, write_post(tmp_path, "untracked", "Untracked", LINKS))
    (request,) = requests_for(standin, "untracked")
    html = content(request, "text/html")
    assert "/o/" not in html and "/c/" not in html
    assert f'href="{LINKS[0]}"' in html
    for personalization in request["personalizations"]:
        assert "%%t%%" not in personalization["substitutions"]


# ---------------------------------------------------------------- our own tracking


def reader_links(server: LiveServer, request: dict[str, Any], email: str) -> tuple[str, list[str]]:
    """One reader's open pixel URL and click URLs (by position), from the request sent."""
    (personalization,) = [p for p in request["personalizations"] if p["to"][0]["email"] == email]
    substitutions = personalization["substitutions"]
    html = content(request, "text/html")
    text = content(request, "text/plain")
    pixels = re.findall(r'<img src="([^"]*/o/[^"]*)"', html)
    assert pixels == [f"{server.url}/o/%%t%%.gif"]
    positions = [int(p) for p in re.findall(re.escape(server.url) + r'/c/%%t%%/(\d+)"', html)]
    assert sorted(set(positions)) == list(range(len(LINKS)))
    for position in range(len(LINKS)):  # the text part has the same tracked links
        assert f"{server.url}/c/%%t%%/{position}" in text
    assert not any(url in html or url in text for url in ("https://example.org/story",))
    assert set(substitutions) == {"%%unsubscribe_url%%", "%%t%%"}  # two per reader
    token = substitutions["%%t%%"]
    pixel = pixels[0].replace("%%t%%", token)
    clicks = [f"{server.url}/c/{token}/{position}" for position in range(len(LINKS))]
    return pixel, clicks


def test_own_opens_and_clicks_over_http(
    server: LiveServer, standin: SendGridStandIn, make_rt, sessions, tmp_path
) -> None:
    rt = make_rt()
    seed(sessions, READERS[:3])
    campaign_id = send(rt, write_post(tmp_path, "tracked", "Tracked", LINKS))
    (request, *_) = requests_for(standin, "tracked")
    pixel, clicks = reader_links(server, request, READERS[0])

    with httpx.Client(follow_redirects=False, timeout=15, headers={"user-agent": CHROME}) as mua:
        opened = mua.get(pixel)
        assert opened.status_code == 200
        assert opened.headers["content-type"] == "image/gif"
        assert opened.content == PIXEL and opened.content.startswith(b"GIF8")
        cache = opened.headers["cache-control"]
        assert "no-store" in cache and "no-cache" in cache and "max-age=0" in cache
        assert opened.headers["pragma"] == "no-cache"
        # The same client again, as Apple's privacy proxy would fetch it: a machine open.
        assert mua.get(pixel, headers={"user-agent": "Mozilla/5.0"}).status_code == 200
        # A browser agent but from Apple's network (17/8) through the proxy in front of us.
        apple = mua.get(pixel, headers={"x-forwarded-for": "17.58.63.1"})
        assert apple.status_code == 200

        first = mua.get(clicks[0])
        assert first.status_code == 302
        assert first.headers["location"] == LINKS[0]
        second = mua.get(clicks[1] + "?url=https://evil.example")
        assert second.status_code == 302
        assert second.headers["location"] == LINKS[1]
        assert "no-store" in second.headers["cache-control"]

    # Recording is buffered: it reaches the database within the flush interval.
    wait_for(lambda: count_events(sessions, kind="opened") == 3, seconds=5)
    wait_for(lambda: count_events(sessions, kind="clicked") == 2, seconds=5)
    time.sleep(0.6)  # one more flush: nothing else arrives
    stored = events_of(sessions)
    assert len(stored) == 5
    opens = [e for e in stored if e.kind == EventKind.OPENED]
    assert [e.machine for e in opens] == [False, True, True]
    assert {(e.campaign_id, e.source) for e in stored} == {(campaign_id, "tracking")}
    assert len({e.delivery_id for e in stored}) == 1
    assert opens[0].detail == {"user_agent": CHROME}

    with rt.sessions() as session:
        stats = campaign_stats(session, campaign_id)
    assert (stats.unique_human_opens, stats.unique_opens) == (1, 1)
    assert (stats.human_opens, stats.opens) == (1, 3)
    assert (stats.unique_clicks, stats.clicks) == (1, 2)
    assert stats.sent == 3 and stats.delivered == 0
    assert stats.click_through == pytest.approx(1 / 3)
    assert sorted(stats.top_links) == sorted([(LINKS[0], 1, 1), (LINKS[1], 1, 1)])
    assert sum(o for _, o, _ in stats.timeline) == 3
    assert sum(c for _, _, c in stats.timeline) == 2
    svg = chart_svg(stats.timeline)
    assert svg.startswith("<svg") and "3 opens, 2 clicks" in svg
    assert [r for r in server.log if r.levelname in ("ERROR", "CRITICAL")] == []
