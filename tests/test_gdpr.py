"""GDPR for one address across the whole service: what is exported, what erasing leaves."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from mailer.clock import utcnow
from mailer.config import Settings
from mailer.content.post import load_post
from mailer.content.render import Renderer
from mailer.runtime import Runtime
from mailer.sending.dispatch import InlineQueue, create_campaign, start
from mailer.tracking.events import Event, EventKind, record
from subscribers import store
from subscribers.models import Status


@pytest.fixture
def rt(settings: Settings, database_url: str, tmp_path: Path) -> Iterator[Runtime]:
    runtime = Runtime(
        settings.model_copy(update={"database_url": database_url, "outbox_dir": tmp_path / "o"})
    )
    yield runtime
    runtime.close()


def _sent_and_opened(rt: Runtime, tmp_path: Path, email: str) -> None:
    consent = store.Consent(source="test", text="yes")
    with rt.sessions.begin() as session:
        store.add(session, email, consent, name="Jo", status=Status.CONFIRMED)
    post = tmp_path / "p.md"
    post.write_text("# Hello\n\nSee [us](https://example.org/).\n", "utf-8")
    edition = Renderer(rt.settings).render(load_post(post))
    campaign, _ = create_campaign(rt, edition, post)
    start(rt, campaign.id, InlineQueue(rt))
    opened = Event(
        EventKind.OPENED,
        utcnow(),
        "sendgrid",
        campaign_id=campaign.id,
        delivery_id=1,
        provider_event_id="ev-1",
        raw={"email": email, "useragent": "Mail/1.0", "ip": "203.0.113.9"},
    )
    with rt.sessions.begin() as session:
        record(session, [opened])


def test_export_holds_deliveries_and_events(rt: Runtime, tmp_path: Path) -> None:
    _sent_and_opened(rt, tmp_path, "jo@example.org")
    with rt.sessions() as session:
        data = store.gdpr_export(session, "JO@Example.org")
    assert data["subscriber"]["email"] == "jo@example.org"
    assert [(d["edition"], d["status"]) for d in data["deliveries"]] == [("p", "sent")]
    assert [e["kind"] for e in data["events"]] == ["opened"]
    assert data["events"][0]["detail"]["ip"] == "203.0.113.9"
    json.dumps(data)  # all of it is JSON


def test_erase_leaves_no_address_in_events(rt: Runtime, tmp_path: Path) -> None:
    _sent_and_opened(rt, tmp_path, "jo@example.org")
    with rt.sessions.begin() as session:
        assert store.erase(session, "jo@example.org")
    with rt.sessions() as session:
        details = session.execute(text("SELECT detail FROM events")).scalars().all()
        assert all("example.org" not in json.dumps(d) for d in details)
        assert store.gdpr_export(session, "jo@example.org")["subscriber"] is None
        assert store.suppression_of(session, "jo@example.org") is not None
        # Nor a delivery naming a subscriber who is gone (the ledger has no foreign keys).
        assert session.execute(text("SELECT COUNT(*) FROM deliveries")).scalar() == 0


@pytest.mark.parametrize("forget", [store.erase, store.remove])
def test_a_deleted_subscriber_takes_only_their_own_deliveries(
    rt: Runtime, tmp_path: Path, forget
) -> None:
    _sent_and_opened(rt, tmp_path, "jo@example.org")
    consent = store.Consent(source="test", text="yes")
    with rt.sessions.begin() as session:
        store.add(session, "kim@example.org", consent, status=Status.CONFIRMED)
    post = tmp_path / "q.md"
    post.write_text("# Second\n\nMore.\n", "utf-8")
    campaign, _ = create_campaign(rt, Renderer(rt.settings).render(load_post(post)), post)
    start(rt, campaign.id, InlineQueue(rt))
    with rt.sessions.begin() as session:
        assert forget(session, "jo@example.org")
        assert not forget(session, "nobody@example.org")
    with rt.sessions() as session:
        left = session.execute(
            text(
                "SELECT s.email, d.status FROM deliveries d "
                "LEFT JOIN subscribers s ON s.id = d.subscriber_id"
            )
        ).all()
    assert [tuple(row) for row in left] == [("kim@example.org", "sent")]


def test_an_international_domain_is_found_however_it_is_typed(rt: Runtime) -> None:
    consent = store.Consent(source="test", text="yes")
    with rt.sessions.begin() as session:
        store.add(session, "leser@bücher.de", consent, status=Status.CONFIRMED)
    with rt.sessions.begin() as session:
        assert store.find(session, "Leser@BÜCHER.de") is not None
        assert store.find(session, "leser@xn--bcher-kva.de") is not None
        assert store.erase(session, "leser@bücher.de")
    with rt.sessions() as session:
        assert store.suppression_of(session, "leser@xn--bcher-kva.de") is not None
