"""The archive as an Atom feed (RFC 4287), for readers who follow newsletters in a feed reader.

Each entry is one sent edition's web version, whole (also when the email was shortened),
without anything of any one reader: the unsubscribe link becomes the subscribe page.
The XML is built with ElementTree, which escapes every text and attribute; characters
XML 1.0 cannot hold at all (most control characters) are dropped first.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable
from urllib.parse import urlsplit
from xml.etree import ElementTree as ET

from mailer.config import Settings
from mailer.store.ledger import Campaign

__all__ = ["FEED_ENTRIES", "atom_feed"]

ATOM = "http://www.w3.org/2005/Atom"
FEED_ENTRIES = 20  # editions in the feed, newest first: each is a whole post
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")
_BODY = re.compile(r"<body\b[^>]*>(.*)</body>", re.DOTALL | re.IGNORECASE)


def atom_feed(campaigns: Iterable[Campaign], settings: Settings, now: dt.datetime) -> bytes:
    """The feed of ``campaigns`` (sent ones, newest first; one entry per slug)."""
    public_url = settings.public_url  # no trailing slash: config._http_url strips it
    host = urlsplit(public_url).hostname or "localhost"
    ET.register_namespace("", ATOM)
    feed = ET.Element(f"{{{ATOM}}}feed")
    if settings.lang:
        feed.set("{http://www.w3.org/XML/1998/namespace}lang", settings.lang)
    _text(feed, "id", f"{public_url}/archive")
    _text(feed, "title", settings.publication_name)
    _link(feed, f"{public_url}/feed.xml", "self", "application/atom+xml")
    _link(feed, f"{public_url}/archive", "alternate", "text/html")
    updated = _text(feed, "updated", _stamp(now))
    author = ET.SubElement(feed, f"{{{ATOM}}}author")
    _text(author, "name", settings.publication_name)
    _text(author, "uri", settings.site_url)
    seen: set[str] = set()
    latest: dt.datetime | None = None
    for campaign in campaigns:
        if campaign.slug in seen or campaign.started_at is None:
            continue  # the edition page shows a slug's latest campaign only
        seen.add(campaign.slug)
        changed = campaign.finished_at or campaign.started_at
        latest = max(latest or changed, changed)
        _entry(feed, campaign, public_url, host, settings.publication_name)
        if len(seen) == FEED_ENTRIES:
            break
    if latest is not None:
        updated.text = _stamp(latest)  # the feed changes when an edition does
    return ET.tostring(feed, encoding="utf-8", xml_declaration=True)


def _entry(
    feed: ET.Element, campaign: Campaign, public_url: str, host: str, publication: str
) -> None:
    assert campaign.started_at is not None
    edition = campaign.frozen_edition().for_web()
    url = f"{public_url}/archive/{campaign.slug}"
    html, _text_part = edition.personalize(unsubscribe_url=f"{public_url}/subscribe", view_url=url)
    body = _BODY.search(html)
    entry = ET.SubElement(feed, f"{{{ATOM}}}entry")
    if edition.lang:
        entry.set("{http://www.w3.org/XML/1998/namespace}lang", edition.lang)
    # A tag URI (RFC 4151): the edition's, whatever address the site moves to later.
    _text(entry, "id", f"tag:{host},{campaign.started_at:%Y-%m-%d}:archive/{campaign.slug}")
    _text(entry, "title", edition.title or campaign.subject)
    _link(entry, url, "alternate", "text/html")
    _text(entry, "published", _stamp(campaign.started_at))
    _text(entry, "updated", _stamp(campaign.finished_at or campaign.started_at))
    author = ET.SubElement(entry, f"{{{ATOM}}}author")  # readers show the entry's own
    _text(author, "name", publication)
    if edition.preheader:
        _text(entry, "summary", edition.preheader)
    _text(entry, "content", body.group(1) if body else html).set("type", "html")


def _text(parent: ET.Element, name: str, text: str) -> ET.Element:
    element = ET.SubElement(parent, f"{{{ATOM}}}{name}")
    element.text = _NOT_XML.sub("", text)
    return element


def _link(parent: ET.Element, href: str, rel: str, kind: str) -> None:
    ET.SubElement(parent, f"{{{ATOM}}}link", {"href": href, "rel": rel, "type": kind})


def _stamp(moment: dt.datetime) -> str:
    """RFC 3339, in UTC (the store's times are UTC; a naive one is taken as UTC)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.astimezone(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
