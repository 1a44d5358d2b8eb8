"""The archive's Atom feed, read by a real feed parser: sent editions only, whole."""

from __future__ import annotations

import dataclasses
import datetime as dt
from urllib.parse import urlsplit

import feedparser

from mailer.config import Settings
from mailer.content.post import load_post
from mailer.content.render import Renderer
from mailer.store.ledger import Campaign, CampaignState
from mailer.web.archive import feed_campaigns
from mailer.web.feed import atom_feed
from mailer.web.pages import Pages
from tests.test_clip import links_post

DAY = dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.UTC)


def add(sessions, renderer: Renderer, write_post, slug: str, status: str, days: int) -> None:
    """A campaign of a post titled after ``slug`` (``<b>`` and ``&`` in it), ``days`` after DAY."""
    post = write_post(
        f"---\ntitle: {slug} <b>&</b>\nslug: {slug}\n---\nHello [x](https://x.org).\n"
    )
    edition = renderer.render(load_post(post))
    started = None if status in ("draft", "scheduled") else DAY + dt.timedelta(days=days)
    with sessions.begin() as session:
        session.add(
            Campaign(
                slug=slug,
                subject=edition.subject,
                edition=edition.to_dict(),
                status=status,
                backend="outbox",
                started_at=started,
                finished_at=started and started + dt.timedelta(hours=1),
            )
        )


def test_the_feed_is_valid_atom_of_sent_editions_only(
    sessions, renderer: Renderer, settings: Settings, write_post
) -> None:
    add(sessions, renderer, write_post, "one", CampaignState.SENT, 0)
    add(sessions, renderer, write_post, "two", CampaignState.SENDING, 7)
    add(sessions, renderer, write_post, "draft", CampaignState.DRAFT, 8)
    add(sessions, renderer, write_post, "later", CampaignState.SCHEDULED, 9)
    with sessions() as session:
        xml = atom_feed(feed_campaigns(session), settings, DAY)
    feed = feedparser.parse(xml)
    assert feed.bozo == 0, feed.bozo_exception
    assert feed.version == "atom10"
    public = str(settings.public_url).rstrip("/")
    assert feed.feed.title == settings.publication_name
    assert feed.feed.id == f"{public}/archive"
    assert {link.rel: link.href for link in feed.feed.links}["self"] == f"{public}/feed.xml"
    assert feed.feed.updated == "2026-03-09T10:00:00Z"  # the newest edition's
    assert [e.title for e in feed.entries] == ["two <b>&</b>", "one <b>&</b>"]
    first = feed.entries[0]
    assert first.link == f"{public}/archive/two"
    assert first.id == f"tag:{urlsplit(public).hostname},2026-03-09:archive/two"
    assert first.published == "2026-03-09T09:00:00Z" and first.updated == "2026-03-09T10:00:00Z"
    assert first.author == settings.publication_name
    (content,) = first.content
    assert content.type == "text/html" and 'href="https://x.org"' in content.value
    assert "%%" not in content.value and "two &lt;b&gt;&amp;&lt;/b&gt;" in content.value


def test_a_shortened_edition_is_whole_in_the_feed(
    sessions, renderer: Renderer, settings: Settings, write_post
) -> None:
    edition = renderer.render(load_post(write_post(links_post(20, 20))))
    assert edition.moved
    with sessions.begin() as session:
        session.add(
            Campaign(
                slug=edition.slug,
                subject=edition.subject,
                edition=dataclasses.replace(edition, title="Long").to_dict(),
                status=CampaignState.SENT,
                backend="outbox",
                started_at=DAY,
            )
        )
    with sessions() as session:
        feed = feedparser.parse(atom_feed(feed_campaigns(session), settings, DAY))
    assert feed.bozo == 0 and "Link 20.19:" in feed.entries[0].content[0].value


def test_the_archive_page_points_feed_readers_to_the_feed(renderer, settings) -> None:
    page = Pages(renderer.templates, settings).render("archive", editions=[]).body.decode()
    assert '<link rel="alternate" type="application/atom+xml"' in page
    assert 'href="/feed.xml"' in page.split("</head>")[0]
