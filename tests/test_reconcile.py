"""Unknown deliveries settled from the provider's events; the stats CLI, stats page and archive.

On SQLite and PostgreSQL: a backend that never hears back leaves rows ``unknown``; signed
``processed``/``delivered`` events through the live webhook settle them as sent,
``reconcile`` reports what it did and (by policy, past the window) sends the rest exactly
once, and ``settle`` settles a dead worker's rows from events already stored. The
operator's commands run as real processes; the stats page and the public archive are
read over real HTTP.
"""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import update

from mailer.clock import utcnow
from mailer.delivery import Outcome
from mailer.delivery.message import Batch
from mailer.errors import UncertainDeliveryError
from mailer.runtime import Runtime
from mailer.sending.dispatch import InlineQueue, cancel, progress, reconcile, settle, start
from mailer.store.ledger import Campaign, Delivery
from mailer.tokens import Purpose, Signer
from mailer.tracking.events import Event, EventKind, record
from tests.conftest import ROOT
from tests.event_support import (
    WebhookKey,
    deliveries,
    new_campaign,
    post_events,
    seed,
    sg_event,
    write_post,
)
from tests.live_server import LiveServer, server_factory

start_server = server_factory()

LINKS = ["https://example.org/story", "https://example.org/other"]
READERS = [f"reader{i}@example.org" for i in range(7)]
STATS_TOKEN = "stats-token-for-tests"
HOUR = dt.timedelta(hours=1)


class Uncertain:
    """A provider that takes the request and never answers: every row becomes unknown."""

    name = "uncertain"

    def __init__(self) -> None:
        self.calls = 0

    def send(self, batch: Batch) -> list[Outcome]:
        self.calls += 1
        raise UncertainDeliveryError("SendGrid did not answer in time")


class Recording:
    """A provider that accepts everything and remembers each delivery key it was given."""

    name = "recording"

    def __init__(self) -> None:
        self.keys: list[str] = []

    def send(self, batch: Batch) -> list[Outcome]:
        self.keys.extend(e.key for e in batch.envelopes)
        return [Outcome(e.key, "sent", provider_id="recorded") for e in batch.envelopes]


class Hold:
    """A queue that keeps the batches (a broker whose worker has not picked them up)."""

    def __init__(self) -> None:
        self.batches: list[int] = []

    def enqueue(self, campaign_id: int, batches) -> None:
        self.batches.extend(batches)


@pytest.fixture
def key() -> WebhookKey:
    return WebhookKey()


@pytest.fixture
def server(start_server: Callable[..., LiveServer], key: WebhookKey) -> LiveServer:
    return start_server(sendgrid_webhook_key=key.public_b64, stats_token=STATS_TOKEN)


@pytest.fixture
def make_rt() -> Iterator[Callable[..., Runtime]]:
    made: list[Runtime] = []

    def make(settings, backend=None, **changes: Any) -> Runtime:
        rt = Runtime(settings.model_copy(update={"batch_size": 3, **changes}))
        if backend is not None:
            rt.backend = backend  # cached_property: the instance attribute wins
        made.append(rt)
        return rt

    yield make
    for rt in made:
        rt.close()


def statuses(sessions, campaign_id: int) -> dict[str, str]:
    return {email: d.status for email, d in deliveries(sessions, campaign_id).items()}


def keys(sessions, campaign_id: int) -> dict[str, str]:
    return {
        email: f"{campaign_id}-{d.id}" for email, d in deliveries(sessions, campaign_id).items()
    }


def store(sessions, *events: Event) -> None:
    """Events already in the table (written earlier, as by another process)."""
    with sessions.begin() as session:
        record(session, list(events))


def provider_event(kind: EventKind, campaign_id: int, delivery_key: str, **extra: Any) -> Event:
    return Event(
        kind,
        utcnow(),
        "sendgrid",
        campaign_id=campaign_id,
        delivery_id=int(delivery_key.split("-")[1]),
        provider_event_id=uuid.uuid4().hex,
        **extra,
    )


def uncertain_campaign(make_rt, settings, sessions, tmp_path: Path, slug: str, readers: list[str]):
    """A campaign sent to ``readers`` through a provider that never answered."""
    seed(sessions, readers)
    uncertain = Uncertain()
    rt = make_rt(settings, uncertain)
    campaign_id = new_campaign(
        rt, write_post(tmp_path, slug, slug.replace("-", " ").title(), LINKS)
    )
    assert start(rt, campaign_id, InlineQueue(rt))
    assert uncertain.calls > 0
    state = progress(rt, campaign_id)
    assert (state.unknown, state.sent, state.queued) == (len(readers), 0, 0), state
    assert state.status == "unsettled"
    return rt, campaign_id


# ---------------------------------------------------------------- settling unknown rows


def test_events_settle_unknown_rows_and_reconcile_does_the_rest(
    server: LiveServer, key: WebhookKey, make_rt, sessions, tmp_path
) -> None:
    _, campaign_id = uncertain_campaign(
        make_rt, server.settings, sessions, tmp_path, "settle-weekly", READERS
    )
    key_of = keys(sessions, campaign_id)
    r = READERS

    # SendGrid reports it accepted three of them: those are sent, the rest stay unknown.
    events = [
        sg_event("processed", r[0], key_of[r[0]]),
        sg_event("processed", r[1], key_of[r[1]]),
        sg_event("delivered", r[2], key_of[r[2]]),
        sg_event("open", r[3], key_of[r[3]]),  # an open settles nothing
        sg_event("processed", "stranger@example.org", f"{campaign_id}-999999"),
    ]
    response = post_events(server.url, events, key)
    assert response.status_code == 200, response.text
    now = statuses(sessions, campaign_id)
    assert {e for e, s in now.items() if s == "sent"} == {r[0], r[1], r[2]}
    assert {e for e, s in now.items() if s == "unknown"} == set(r[3:])
    assert deliveries(sessions, campaign_id)[r[0]].error == "settled from the provider's events"

    # An event stored earlier (not applied yet) is what reconcile settles first.
    store(sessions, provider_event(EventKind.PROCESSED, campaign_id, key_of[r[3]]))
    recording = Recording()
    resender = make_rt(server.settings, recording)
    done = reconcile(
        resender, campaign_id, InlineQueue(resender), resend=False, unknown_window=HOUR
    )
    assert (done.settled, done.requeued, done.still_unknown) == (1, 0, 3)
    assert recording.keys == []
    assert {e for e, s in statuses(sessions, campaign_id).items() if s == "unknown"} == set(r[4:])

    # Without a choice the settings' policy ("reconcile") leaves them for the operator.
    done = reconcile(resender, campaign_id, InlineQueue(resender), unknown_window=HOUR)
    assert (done.settled, done.requeued, done.still_unknown) == (0, 0, 3)
    assert recording.keys == []
    # "resend" sends them only once the window has passed without an event: not yet.
    done = reconcile(resender, campaign_id, InlineQueue(resender), resend=True, unknown_window=HOUR)
    assert (done.settled, done.requeued, done.still_unknown) == (0, 0, 3)
    assert done.resendable_at is not None and done.resendable_at > utcnow()
    assert recording.keys == []

    # Past the window: the rest is queued and sent, exactly once each.
    window = dt.timedelta(0)
    done = reconcile(
        resender, campaign_id, InlineQueue(resender), resend=True, unknown_window=window
    )
    assert (done.settled, done.requeued, done.still_unknown) == (0, 3, 0)
    assert sorted(recording.keys) == sorted(key_of[email] for email in r[4:])
    state = progress(resender, campaign_id)
    assert (state.sent, state.unknown, state.queued, state.status) == (7, 0, 0, "sent")
    # Again: nothing left to do, nothing sent twice.
    done = reconcile(
        resender, campaign_id, InlineQueue(resender), resend=True, unknown_window=window
    )
    assert (done.settled, done.requeued, done.still_unknown, done.resendable_at) == (0, 0, 0, None)
    assert len(recording.keys) == 3


def test_dead_workers_rows_settle_from_stored_events(
    server: LiveServer, key: WebhookKey, make_rt, sessions, tmp_path
) -> None:
    seed(sessions, READERS[:4])
    rt = make_rt(server.settings, Recording())
    campaign_id = new_campaign(rt, write_post(tmp_path, "reap-weekly", "Reap weekly", LINKS))
    hold = Hold()
    assert start(rt, campaign_id, hold)
    # A worker claimed every row, sent the request and died before writing the outcome.
    with rt.sessions.begin() as session:
        session.execute(
            update(Delivery)
            .where(Delivery.campaign_id == campaign_id)
            .values(status="sending", claimed_at=utcnow() - dt.timedelta(hours=1))
        )
    key_of = keys(sessions, campaign_id)
    r = READERS
    events = [sg_event("processed", r[0], key_of[r[0]]), sg_event("delivered", r[1], key_of[r[1]])]
    assert post_events(server.url, events, key).status_code == 200
    # In flight is not unknown: the events wait for the reaper.
    assert set(statuses(sessions, campaign_id).values()) == {"sending"}

    done = settle(rt, resend=False, unknown_window=HOUR)  # as the sweep does
    assert (done.stranded, done.settled, done.requeued) == (4, 2, 0)
    assert statuses(sessions, campaign_id) == {
        r[0]: "sent", r[1]: "sent", r[2]: "unknown", r[3]: "unknown"
    }  # fmt: skip
    assert progress(rt, campaign_id).status == "unsettled"
    assert rt.backend.keys == []


# ---------------------------------------------------------------- the operator's commands


def run_cli(*args: str, database_url: str, cwd: Path, **env: str) -> str:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MAILER_")}
    clean.update(COLUMNS="200", PYTHONPATH=str(ROOT), MAILER_DATABASE_URL=database_url, **env)
    result = subprocess.run(
        [sys.executable, "-m", "mailer", *args],
        cwd=cwd,
        env=clean,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    return result.stdout


def table_rows(output: str) -> list[list[str]]:
    """The cells of each row of the tables rich printed."""
    rows = []
    for line in output.splitlines():
        line = line.replace("┃", "│").strip()  # header rows are drawn heavier
        if "│" in line:
            rows.append([cell.strip() for cell in line.strip("│").split("│")])
    return rows


def test_cli_reconcile_and_stats(
    settings, database_url: str, make_rt, sessions, tmp_path: Path
) -> None:
    readers = READERS[:5]
    rt, campaign_id = uncertain_campaign(
        make_rt, settings.model_copy(update={"database_url": database_url}), sessions,
        tmp_path, "cli-weekly", readers,
    )  # fmt: skip
    key_of = keys(sessions, campaign_id)
    r = readers
    tracked = dict(source="tracking", campaign_id=campaign_id)
    store(
        sessions,
        provider_event(EventKind.DELIVERED, campaign_id, key_of[r[0]]),
        provider_event(EventKind.DELIVERED, campaign_id, key_of[r[1]]),
        provider_event(EventKind.BOUNCED, campaign_id, key_of[r[4]], bounce="hard"),
        Event(EventKind.OPENED, utcnow(), delivery_id=int(key_of[r[0]].split("-")[1]), **tracked),
        Event(
            EventKind.OPENED,
            utcnow(),
            delivery_id=int(key_of[r[0]].split("-")[1]),
            machine=True,
            **tracked,
        ),
        Event(
            EventKind.CLICKED,
            utcnow(),
            delivery_id=int(key_of[r[1]].split("-")[1]),
            position=1,
            **tracked,
        ),
    )

    out = run_cli(
        "campaigns", "reconcile", str(campaign_id), "--no-resend",
        database_url=database_url, cwd=tmp_path,
    )  # fmt: skip
    assert " ".join(out.split()).startswith(  # then when a resend could send the rest
        f"Campaign {campaign_id}: 2 settled as sent from provider events, "
        "0 queued again, 3 still unknown."
    )

    rows = table_rows(run_cli("stats", str(campaign_id), database_url=database_url, cwd=tmp_path))
    detail = {row[0]: row[1] for row in rows if len(row) == 2}
    assert detail == {
        "sent": "2",
        "delivered (the provider says it reached the inbox server)": "2",
        "failed": "0",
        "unknown (no answer yet)": "3",
        "readers who opened": "1",
        "readers who opened, with privacy proxies and scanners": "1",
        "times opened by readers": "1",
        "times opened, with privacy proxies and scanners": "2",
        "readers who clicked": "1",
        "clicks, repeated ones too": "1",
        "click-through (readers who clicked ÷ delivered)": "50.0%",
        "bounces": "1",
        "complaints (marked as spam)": "0",
        "unsubscribes": "0",
        "hard-bounce rate (readers whose address does not exist ÷ attempted; the brake stops "
        "the send over 5.0% of at least 500)": "20.0%",
        "complaint rate (readers who marked it as spam ÷ sent; the brake stops the send over "
        "0.10% of at least 1,000)": "0.00%",
        "reputation brake": "off",
    }
    top = [row for row in rows if len(row) == 3]
    assert top == [["clicks", "people", "link"], ["1", "1", LINKS[1]]]

    overview = table_rows(run_cli("stats", database_url=database_url, cwd=tmp_path))
    assert overview[0] == [
        "id", "subject", "sent", "opened", "clicked", "click-through", "bounced", "unsub."
    ]  # fmt: skip
    assert overview[1] == [str(campaign_id), "Cli Weekly", "2", "1", "1", "50.0%", "1", "0"]

    # Policy "resend" through the command, once the window has passed with no event: the
    # three unknown rows go out, once.
    with rt.sessions.begin() as session:
        session.execute(
            update(Delivery)
            .where(Delivery.campaign_id == campaign_id, Delivery.status == "unknown")
            .values(claimed_at=utcnow() - 2 * HOUR)
        )
    outbox = {"MAILER_BACKEND": "outbox", "MAILER_OUTBOX_DIR": str(tmp_path / "outbox")}
    args = ("campaigns", "reconcile", str(campaign_id), "--resend")
    out = run_cli(*args, database_url=database_url, cwd=tmp_path, **outbox)
    assert " ".join(out.split()) == (
        f"Campaign {campaign_id}: 0 settled as sent from provider events, "
        "3 queued again, 0 still unknown."
    )
    assert len(list((tmp_path / "outbox").glob("*.eml"))) == 3
    out = run_cli(*args, database_url=database_url, cwd=tmp_path, **outbox)
    assert "0 queued again, 0 still unknown" in " ".join(out.split())
    assert len(list((tmp_path / "outbox").glob("*.eml"))) == 3
    state = progress(rt, campaign_id)
    assert (state.sent, state.unknown, state.status) == (5, 0, "sent")


# ---------------------------------------------------------------- the stats page


def page_numbers(page: str) -> dict[str, str]:
    return dict(re.findall(r'<th scope="row"[^>]*>([^<]+)</th><td[^>]*>([^<]+)</td>', page))


def sent_campaign(server: LiveServer, make_rt, sessions, tmp_path: Path, slug: str) -> int:
    rt = make_rt(server.settings)  # the outbox backend the live server is set up with
    campaign_id = new_campaign(
        rt, write_post(tmp_path, slug, slug.replace("-", " ").title(), LINKS)
    )
    assert start(rt, campaign_id, InlineQueue(rt))
    assert progress(rt, campaign_id).status == "sent"
    return campaign_id


def test_stats_page_needs_the_token(server: LiveServer, make_rt, sessions, tmp_path) -> None:
    seed(sessions, READERS[:3])
    campaign_id = sent_campaign(server, make_rt, sessions, tmp_path, "stats-weekly")
    key_of = keys(sessions, campaign_id)
    delivery = {email: int(k.split("-")[1]) for email, k in key_of.items()}
    earlier = utcnow() - dt.timedelta(hours=2)
    tracked = dict(source="tracking", campaign_id=campaign_id)
    store(
        sessions,
        *[provider_event(EventKind.DELIVERED, campaign_id, k) for k in key_of.values()],
        Event(EventKind.OPENED, earlier, delivery_id=delivery[READERS[0]], **tracked),
        Event(
            EventKind.OPENED, utcnow(), delivery_id=delivery[READERS[1]], machine=True, **tracked
        ),
        Event(EventKind.CLICKED, utcnow(), delivery_id=delivery[READERS[0]], position=0, **tracked),
    )
    url = f"{server.url}/stats/{campaign_id}"
    bearer = {"authorization": f"Bearer {STATS_TOKEN}"}

    refused = httpx.get(url)
    assert refused.status_code == 401
    assert refused.headers["www-authenticate"].lower().startswith("bearer")
    assert "<svg" not in refused.text
    wrong = [
        httpx.get(f"{url}?token={STATS_TOKEN}"),  # never from the URL: access logs keep it
        httpx.get(url, headers={"authorization": "Bearer nope"}),
        httpx.get(url, auth=("anyone", STATS_TOKEN)),  # Basic: no more
    ]
    assert [response.status_code for response in wrong] == [401] * 3
    assert not any("<svg" in response.text for response in wrong)

    response = httpx.get(url, headers=bearer)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/html")
    page = response.text
    assert "<svg" in page and "<polyline" in page
    assert "2 opens, 1 clicks" in page
    numbers = page_numbers(page)
    assert numbers["Sent"] == "3"
    assert numbers["Delivered (the provider says it reached the inbox server)"] == "3"
    assert numbers["Readers who opened"] == "1"
    assert numbers["Readers who opened, with privacy proxies and scanners"] == "2"
    assert numbers["Times opened, with privacy proxies and scanners"] == "2"
    assert numbers["Readers who clicked"] == "1"
    assert numbers["Click-through (readers who clicked ÷ delivered)"] == "33.3%"
    assert numbers["Bounces"] == "0"
    assert LINKS[0] in page
    # Another campaign's number with the right token: nothing there.
    assert httpx.get(f"{server.url}/stats/{campaign_id + 50}", headers=bearer).status_code == 404


def test_stats_pages_do_not_exist_without_a_token(
    start_server: Callable[..., LiveServer], make_rt, sessions, tmp_path
) -> None:
    server = start_server(stats_token="")
    seed(sessions, READERS[:1])
    campaign_id = sent_campaign(server, make_rt, sessions, tmp_path, "tokenless-weekly")
    url = f"{server.url}/stats/{campaign_id}"
    for response in (
        httpx.get(url),
        httpx.get(f"{url}?token="),
        httpx.get(f"{url}?token={STATS_TOKEN}"),
        httpx.get(url, auth=("stats", "")),
    ):
        assert response.status_code == 404
        assert "www-authenticate" not in response.headers
        assert "<svg" not in response.text


# ---------------------------------------------------------------- the public archive


def test_the_archive_shows_sent_editions_without_any_reader(
    server: LiveServer, make_rt, sessions, tmp_path
) -> None:
    ids = seed(sessions, READERS[:3])
    sent = sent_campaign(server, make_rt, sessions, tmp_path, "archive-sent")
    rt = make_rt(server.settings)
    draft = new_campaign(rt, write_post(tmp_path, "archive-draft", "Archive Draft", LINKS))
    cancelled = new_campaign(rt, write_post(tmp_path, "archive-gone", "Archive Gone", LINKS))
    cancel(rt, cancelled)
    later = new_campaign(rt, write_post(tmp_path, "archive-later", "Archive Later", LINKS))
    assert start(rt, later, Hold(), at=utcnow() + dt.timedelta(days=2))
    with sessions() as session:
        assert session.get(Campaign, draft).status == "draft"

    listing = httpx.get(f"{server.url}/archive")
    assert listing.status_code == 200
    assert re.findall(r'href="/archive/([^"]+)"', listing.text) == ["archive-sent"]
    assert "Archive Sent" in listing.text
    for hidden in ("Archive Draft", "Archive Gone", "Archive Later"):
        assert hidden not in listing.text

    # What readers got had their own links in it; the web version has none of them.
    mail = "\n".join(
        part.get_content()
        for path in server.outbox.glob("*.eml")
        for part in email.message_from_bytes(path.read_bytes(), policy=email.policy.default).walk()
        if part.get_content_type() == "text/html"
    )
    assert "/unsubscribe/" in mail and "/o/" in mail

    page = httpx.get(f"{server.url}/archive/archive-sent")
    assert page.status_code == 200, page.text
    assert page.headers["content-type"].startswith("text/html")
    html = page.text
    assert "%%" not in html
    assert "/o/" not in html and ".gif" not in html
    assert "/c/" not in html
    assert "/unsubscribe/" not in html
    signer = Signer(server.settings.secret_keys)
    for subscriber_id in ids.values():
        assert signer.sign_ids(Purpose.UNSUBSCRIBE, subscriber_id) not in html
    for address in READERS[:3]:
        assert address not in html
    assert f'href="{LINKS[0]}"' in html and f'href="{LINKS[1]}"' in html
    assert f'href="{server.url}/subscribe"' in html
    assert f'href="{server.url}/archive/archive-sent"' in html
    assert sent > 0

    for slug in ("archive-draft", "archive-gone", "archive-later", "no-such-edition"):
        assert httpx.get(f"{server.url}/archive/{slug}").status_code == 404, slug
