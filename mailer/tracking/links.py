"""Our own open and click tracking, the same for every backend.

At send time a tracked campaign's links point at ``/c/<token>/<position>`` and
the HTML ends with a 1×1 pixel at ``/o/<token>.gif``. The token is the reader's
own, signed, naming the campaign and the delivery; the position names the link
in the campaign's own link table, and the redirect's destination always comes
from that table, never from the URL, so nothing can be pointed elsewhere.

One token per reader, not one per link: the position needs no signature of its
own, since whoever holds one of a reader's links holds them all (the same
email), and a position outside the table is a 404. It keeps each reader's part
of a provider request to two short substitutions, which halves the request and
the work of building it.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from html import unescape

from sqlalchemy import ForeignKey, Integer, Text
from sqlalchemy.orm import Mapped, mapped_column

from mailer.edition import Edition
from mailer.store.db import Base, Id
from mailer.tokens import Purpose, Signer

__all__ = [
    "TRACK_PLACEHOLDER",
    "CampaignLink",
    "is_machine_open",
    "link_table",
    "track",
    "tracking_substitutions",
]

TRACK_PLACEHOLDER = "%%t%%"
_TRACKED_SCHEMES = ("http://", "https://")
# Apple's Mail Privacy Protection fetches every image through Apple's own network,
# with a bare user agent, whether or not anyone reads the message.
_APPLE_NETWORK = ipaddress.ip_network("17.0.0.0/8")
_HREF = re.compile(r'href="([^"]*)"')
# Looked for in the lower-cased agent, one by one: half the time of one alternation pattern
# (and a tenth of a case-insensitive one), on every open.
_MACHINE_AGENTS = ("bot", "crawler", "spider", "preview", "scanner", "barracuda", "mimecast",
                   "proofpoint")  # fmt: skip


class CampaignLink(Base):
    """The links a campaign may redirect to, by position."""

    __tablename__ = "campaign_links"

    campaign_id: Mapped[int] = mapped_column(
        Id, ForeignKey("campaigns.id", ondelete="CASCADE"), primary_key=True
    )
    position: Mapped[int] = mapped_column(Integer, primary_key=True)
    url: Mapped[str] = mapped_column(Text)


def link_table(edition: Edition) -> list[str]:
    """The edition's web links, each once, in order: what clicks are counted on."""
    return list(
        dict.fromkeys(link.url for link in edition.links if link.url.startswith(_TRACKED_SCHEMES))
    )


def track(edition: Edition, links: list[str], public_url: str) -> tuple[str, str]:
    """The edition's HTML and text with every tracked link and the pixel as placeholders."""
    positions = {url: position for position, url in enumerate(links)}

    def tracked(url: str) -> str | None:
        position = positions.get(url)
        return None if position is None else f"{public_url}/c/{TRACK_PLACEHOLDER}/{position}"

    def in_html(match: re.Match[str]) -> str:
        return f'href="{tracked(unescape(match[1])) or match[1]}"'

    html = _HREF.sub(in_html, edition.html)
    text = edition.text
    # Longest first, so a URL that starts another one does not take its place; a URL ends
    # at a space, a bracket or the sentence's last punctuation.
    for url in sorted(links, key=len, reverse=True):
        end = r"(?=[.,;:!?]*(?:[)\s'\"\]>]|$))"
        text = re.sub(re.escape(url) + end, _as_written(tracked(url) or url), text)
    pixel = (
        f'<img src="{public_url}/o/{TRACK_PLACEHOLDER}.gif" width="1" height="1" alt="" '
        'style="display:block;width:1px;height:1px;border:0;" />'
    )
    html = html.replace("</body>", pixel + "</body>", 1)
    return html, text


def _as_written(replacement: str) -> Callable[[re.Match[str]], str]:
    """``re.sub``'s replacement taken as it is: a backslash in a URL is no group reference."""
    return lambda _match: replacement


def tracking_substitutions(signer: Signer, campaign_id: int, delivery_id: int) -> dict[str, str]:
    """One reader's tracking token, for the pixel and every tracked link."""
    return {TRACK_PLACEHOLDER: signer.sign_ids(Purpose.TRACK, campaign_id, delivery_id)}


def is_machine_open(ip: str, user_agent: str) -> bool:
    """An open made by a privacy proxy or a security scanner, not by a reader's eyes."""
    # Only an address written "17.…" can be an IPv4 one in 17/8 (ipaddress takes no leading
    # zeros), so the others skip the parse (3 µs).
    if ip.startswith("17."):
        try:
            if ipaddress.ip_address(ip) in _APPLE_NETWORK:
                return True
        except ValueError:
            pass
    agent = user_agent.strip()
    if agent in ("", "Mozilla/5.0"):
        return True
    agent = agent.lower()
    return any(word in agent for word in _MACHINE_AGENTS)
