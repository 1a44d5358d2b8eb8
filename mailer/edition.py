"""An Edition: a post rendered into the email every reader gets, before personalisation.

The HTML and text carry two placeholders that the send fills per reader (the
unsubscribe link and the view-in-browser link), so one render serves a whole
campaign and what was previewed is what is sent. A post too long for Gmail's clip is
emailed shortened (``shorten.py``); its whole HTML is then kept as the web version.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from html import escape
from typing import Any, Literal

__all__ = [
    "UNSUBSCRIBE_PLACEHOLDER",
    "VIEW_PLACEHOLDER",
    "Edition",
    "Finding",
    "Image",
    "Link",
    "WebSection",
]

UNSUBSCRIBE_PLACEHOLDER = "%%unsubscribe_url%%"
VIEW_PLACEHOLDER = "%%view_url%%"


@dataclass(frozen=True)
class Finding:
    """Something that would hurt readers; errors fail ``mailer preview --strict``."""

    severity: Literal["error", "warning"]
    code: str
    message: str
    line: int | None = None

    def __str__(self) -> str:
        where = f"line {self.line}: " if self.line else ""
        return f"{self.severity} [{self.code}] {where}{self.message}"


@dataclass(frozen=True)
class Link:
    url: str
    text: str


@dataclass(frozen=True)
class Image:
    src: str
    alt: str


@dataclass(frozen=True)
class WebSection:
    """A section of a shortened email that readers find only on the web."""

    title: str
    anchor: str  # the id of its heading in the web version


@dataclass(frozen=True)
class Edition:
    slug: str
    title: str
    subject: str
    preheader: str
    lang: str
    post_url: str
    html: str
    text: str
    links: tuple[Link, ...] = field(default=())
    images: tuple[Image, ...] = field(default=())
    # What rendering itself changed or noticed (raw HTML cleaned, unsafe links dropped).
    findings: tuple[Finding, ...] = field(default=())
    # A shortened email: the whole post's HTML, for the web, and the sections only there.
    web_html: str = ""
    moved: tuple[WebSection, ...] = field(default=())

    @property
    def size(self) -> int:
        """Size of the HTML part in bytes: what Gmail measures before clipping."""
        return len(self.html.encode("utf-8"))

    @property
    def full_size(self) -> int:
        """Size of the whole post's HTML, as it would be emailed unshortened."""
        return len((self.web_html or self.html).encode("utf-8"))

    def for_web(self) -> Edition:
        """The web version: the whole post, even when the email was shortened."""
        return replace(self, html=self.web_html or self.html, web_html="", moved=())

    def personalize(self, *, unsubscribe_url: str, view_url: str) -> tuple[str, str]:
        """The HTML and text one reader gets, with that reader's links filled in."""
        pairs = ((UNSUBSCRIBE_PLACEHOLDER, unsubscribe_url), (VIEW_PLACEHOLDER, view_url))
        html, text = self.html, self.text
        for placeholder, value in pairs:
            html = html.replace(placeholder, escape(value, quote=True))
            text = text.replace(placeholder, value)
        return html, text

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready copy, to freeze the edition with its campaign."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Edition:
        return cls(
            **{
                **data,
                "links": tuple(Link(**link) for link in data.get("links", ())),
                "images": tuple(Image(**image) for image in data.get("images", ())),
                "findings": tuple(Finding(**found) for found in data.get("findings", ())),
                "moved": tuple(WebSection(**moved) for moved in data.get("moved", ())),
            }
        )
