"""Post → Edition: Markdown through Jinja2 templates into MJML, compiled to HTML by mjml-python.

A ``Renderer`` holds what is costly to build (the Markdown parser, the templates,
the theme) so that rendering a post is cheap; the three stages are separate
methods so the benchmark can time each. A post whose email would be clipped by Gmail
is rendered again, shortened (``shorten.py``).
"""

from __future__ import annotations

import datetime as dt
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from html import unescape
from typing import Any
from urllib.parse import quote, urljoin

import mjml
from markupsafe import Markup

from mailer.config import Publication, Settings
from mailer.content.images import TIMEOUT, ImageSizes
from mailer.content.language import detect_lang
from mailer.content.lean import lean
from mailer.content.markdown import Block, EmailMarkdown, Parsed, Section
from mailer.content.plaintext import to_text, underline
from mailer.content.post import Post
from mailer.content.preheader import PADDING, choose_preheader
from mailer.content.shorten import BUDGET, Cut, Estimate, delivered_size, shorten
from mailer.content.templating import Templates
from mailer.edition import (
    UNSUBSCRIBE_PLACEHOLDER,
    VIEW_PLACEHOLDER,
    Edition,
    Image,
    Link,
    WebSection,
)
from mailer.errors import TemplateError

__all__ = ["Renderer"]

_URL = re.compile(r"\(?https?://\S+")
_LINK = re.compile(r'<a\b[^>]*?\shref="([^"]*)"[^>]*>(.*?)</a>', re.DOTALL)
_IMG = re.compile(r"<img\b[^>]*>")
_ATTR = re.compile(r'\s(src|alt)="([^"]*)"')
_TAG = re.compile(r"<[^>]+>")
_COLOR = re.compile(r"(?<![-\w])color:[^;]*")  # "color:…", not "background-color:…"
LOGO_WIDTH = 200  # pixels at most of the masthead's logo


@dataclass
class Body:
    """A post's Markdown, prepared: the first stage of rendering."""

    post: Post
    parsed: Parsed
    sections: list[Section]
    blocks: list[Block]
    text: str
    lang: str
    post_url: str


class Renderer:
    def __init__(
        self,
        settings: Settings,
        image_sizes: ImageSizes | None = None,
        *,
        fetch_images: bool = False,
    ) -> None:
        """``fetch_images``: measure remote images over the web (preview, campaign creation);
        otherwise only their cached sizes are used, and a render never waits on the network."""
        self.settings = settings
        self.publication = Publication.of(settings)
        self.templates = Templates(settings.templates_dir)
        self.theme = _accented(self.templates.theme(), settings.accent_color)
        self.markdown = EmailMarkdown(self.theme.get("styles", {}))
        self.images = image_sizes or ImageSizes(
            settings.data_dir / "image-sizes.json", fetch=fetch_images
        )
        self._logo_width_px: int | None = None

    def render(self, post: Post) -> Edition:
        body = self.prepare(post)
        mjml_source, context = self.template(body)
        edition = self.finish(body, context, self.compile(mjml_source, post.path))
        if self._delivered_size(edition.html, post) <= BUDGET:
            return edition
        tried: list[tuple[Cut, str]] = []  # the chosen cut's HTML is not made twice

        def size_of(cut: Cut) -> int:
            tried.append((cut, self._cut(body, cut)))
            return self._delivered_size(tried[-1][1], post)

        first = body.sections[0].anchor
        empty = self._cut(body, Cut([], body.sections, first))  # small: quick to compile
        estimate = Estimate.of(
            edition.html, empty, body.sections, self.settings.public_url, post.slug
        )
        cut = shorten(body.sections, size_of, BUDGET, estimate)
        html = next((h for c, h in tried if c is cut), None) or self._cut(body, cut)
        moved = tuple(WebSection(s.title, s.anchor) for s in cut.moved)
        return replace(edition, html=html, web_html=edition.html, moved=moved)

    def post_url(self, post: Post) -> str:
        if post.canonical_url:
            return post.canonical_url
        path = self.settings.post_path.format(slug=post.slug)
        return urljoin(self.settings.site_url + "/", path)

    # Stage 1: Markdown.
    def prepare(self, post: Post) -> Body:
        post_url = self.post_url(post)
        parsed = self.markdown.parse(post.body, post_url, post.body_line)
        sections = self.markdown.sections(parsed)
        blocks = self._blocks(parsed, post)
        text = to_text(parsed)
        lang = post.lang or self.settings.lang or detect_lang(_URL.sub(" ", post.body))
        return Body(post, parsed, sections, blocks, text, lang, post_url)

    def _blocks(self, parsed: Parsed, post: Post, cut: Cut | None = None) -> list[Block]:
        """The email's blocks, each image at the width it should have."""
        blocks = self.markdown.to_blocks(parsed, None if cut is None else cut.groups)
        self.images.fit(blocks, post.path.parent, self._column_width())
        return blocks

    def _column_width(self) -> int:
        """Pixels an image of the body may take: the email's width less the text's padding."""
        width = str(self.theme.get("sizes", {}).get("width", "600px")).removesuffix("px")
        return int(width) - 2 * 28 if width.isdigit() else 544

    def _cut(self, body: Body, cut: Cut) -> str:
        """The HTML of the email shortened to ``cut``, with its "continue reading" link."""
        blocks = self._blocks(body.parsed, body.post, cut)
        continued: dict[str, object] = {
            "url": Markup(
                VIEW_PLACEHOLDER + ("#" + quote(cut.anchor, safe="") if cut.anchor else "")
            ),
            "titles": [s.title for s in cut.moved if s.title],
        }
        source, _context = self.template(body, blocks, continued)
        return self.compile(source, body.post.path)

    def _delivered_size(self, html: str, post: Post) -> int:
        return delivered_size(html, self.settings.public_url, post.slug)

    # Stage 2: Jinja2 templates.
    def template(
        self,
        body: Body,
        blocks: list[Block] | None = None,
        continued: dict[str, object] | None = None,
    ) -> tuple[str, dict[str, object]]:
        """The MJML of the email: of the whole body, or of ``blocks`` ending with a link to
        ``continued`` on the web."""
        post = body.post
        strings = self.templates.strings(body.lang)
        context: dict[str, object] = {
            "subject": post.subject or post.title,
            "title": post.title,
            "title_rule": underline(post.title, "="),
            "date": _format_date(post.date, strings.get("date_format", "%Y-%m-%d")),
            "preheader": choose_preheader(post.preheader, body.parsed),
            "preheader_padding": PADDING,
            "lang": body.lang,
            "blocks": body.blocks if blocks is None else blocks,
            "continued": continued,
            "body": body.text,
            "theme": self.theme,
            "font_stack": self._font_stack(body.lang),
            "strings": strings,
            "settings": self.publication,
            "post_url": body.post_url,
            "unsubscribe_url": Markup(UNSUBSCRIBE_PLACEHOLDER),
            "view_url": Markup(VIEW_PLACEHOLDER),
            "logo_width": self._logo_width(),
        }
        return self.templates.render("email/newsletter.mjml", **context), context

    def _logo_width(self) -> int:
        """The masthead logo's width: its own, at most ``LOGO_WIDTH``; measured once."""
        logo = self.settings.logo_url
        if self._logo_width_px is None:
            deadline = time.monotonic() + TIMEOUT
            own = self.images.size(logo, logo, self.settings.data_dir, deadline) if logo else None
            self._logo_width_px = min(own[0], LOGO_WIDTH) if own else LOGO_WIDTH
        return self._logo_width_px

    # Stage 3: MJML.
    def compile(self, mjml_source: str, made_for: object) -> str:
        """Lean HTML from MJML; ``made_for`` (a post's path, a template) names the culprit."""
        font_url = self.settings.font_url
        fonts = {self.settings.font_family: font_url} if font_url else {}
        try:
            html = mjml.mjml2html(mjml_source, disable_comments=True, fonts=fonts)
        except ValueError as exc:
            raise TemplateError(f"the templates made invalid MJML for {made_for}: {exc}") from exc
        return lean(html)

    def render_notice(self, name: str, lang: str, **context: object) -> tuple[str, str]:
        """A short service email (the confirmation, say) from ``email/<name>.mjml`` and ``.txt``,
        through the same MJML path and theme as the newsletter."""
        context = {
            "theme": self.theme,
            "font_stack": self._font_stack(lang),
            "strings": self.templates.strings(lang),
            "settings": self.publication,
            "lang": lang,
            **context,
        }
        source = self.templates.render(f"email/{name}.mjml", **context)
        html = self.compile(source, f"email/{name}.mjml")
        return html, self.templates.render(f"email/{name}.txt", **context)

    def finish(self, body: Body, context: dict[str, object], html: str) -> Edition:
        text = self.templates.render("email/newsletter.txt", **context)
        return Edition(
            slug=body.post.slug,
            title=body.post.title,
            subject=str(context["subject"]),
            preheader=str(context["preheader"]),
            lang=body.lang,
            post_url=body.post_url,
            html=html,
            text=text,
            links=tuple(_links(body.blocks)),
            images=tuple(_images(body.blocks)),
            findings=tuple(body.parsed.findings),
        )

    def _font_stack(self, lang: str) -> Markup:
        """The configured web font, then Latin fonts, then the language's CJK fonts."""
        fonts = self.theme.get("fonts", {})
        web = f"'{self.settings.font_family}'" if self.settings.font_url else None
        cjk = fonts.get(lang) or fonts.get(lang.split("-")[0])
        stack = (web, fonts.get("latin"), cjk, fonts.get("generic", "sans-serif"))
        # Markup: the single quotes around font names must not become &#39; in the attribute.
        return Markup(", ".join(f for f in stack if f).replace('"', "'"))


def _accented(theme: dict[str, Any], accent: str) -> dict[str, Any]:
    """The theme with links and buttons in the brand's colour (``MAILER_ACCENT_COLOR``)."""
    if not accent:
        return theme
    styles = dict(theme.get("styles", {}))
    styles["a"] = _COLOR.sub(f"color:{accent}", styles.get("a", "")) or f"color:{accent};"
    colors = {**theme.get("colors", {}), "link": accent}
    return {**theme, "colors": colors, "styles": styles}


def _format_date(date: dt.date | None, fmt: str) -> str:
    return date.strftime(fmt) if date else ""


def _links(blocks: list[Block]) -> Iterator[Link]:
    """Every link of the body, in order (the block HTML is markdown-it's or nh3's: regular)."""
    for block in blocks:
        if block.kind == "image" and block.href:
            yield Link(block.href, block.alt)
        for href, inner in _LINK.findall(block.html):
            yield Link(unescape(href), unescape(_TAG.sub("", inner)).strip())


def _images(blocks: list[Block]) -> Iterator[Image]:
    for block in blocks:
        if block.kind == "image":
            yield Image(block.src, block.alt)
        for tag in _IMG.findall(block.html):
            attrs = dict(_ATTR.findall(tag))
            yield Image(unescape(attrs.get("src", "")), unescape(attrs.get("alt", "")))
