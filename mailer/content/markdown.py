"""Markdown to the blocks of an email: styled HTML, images and dividers, with absolute URLs.

The post is parsed once with markdown-it-py (CommonMark, tables, strikethrough,
footnotes, linkify, ``{width=…}`` after an image, an id on each ``#``/``##`` heading).
``to_blocks`` then prepares the tokens for email: inline styles from the theme, every
URL made absolute, unsafe links dropped, raw HTML sanitized. ``sections`` splits the
body at its ``#``/``##`` headings, where a long email may be cut (``shorten.py``).
The same tokens feed the plain-text part (``plaintext.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from html import escape
from typing import Any, Literal
from urllib.parse import urljoin, urlsplit

from markdown_it import MarkdownIt
from markdown_it.token import Token
from markdown_it.utils import EnvType
from markupsafe import Markup
from mdit_py_plugins.anchors import anchors_plugin
from mdit_py_plugins.attrs import attrs_plugin
from mdit_py_plugins.footnote import footnote_plugin

from mailer.content.sanitize import clean_html, is_safe_url, unsafe_parts
from mailer.edition import Finding

__all__ = ["Block", "EmailMarkdown", "Parsed", "Section", "inline_text"]

# The levels of heading that start a section, with an id the web version links to.
SECTION_LEVELS = ("h1", "h2")


@dataclass
class Block:
    """One piece of the email body, as the template lays it out."""

    kind: Literal["html", "image"]
    html: str = ""  # Markup: already sanitized
    src: str = ""
    source: str = ""  # the image's address as the post writes it (maybe a file beside it)
    alt: str = ""
    href: str = ""
    title: str = ""
    width: int | None = None  # pixels, from ``{width=…}``; ``images.py`` may fill it in


@dataclass
class Section:
    """A run of top-level blocks, from one ``#``/``##`` heading to the next (or the start)."""

    title: str  # the heading's words; "" for what comes before the first heading
    anchor: str  # the heading's id; "" for what comes before the first heading
    groups: list[list[Token]]


@dataclass
class Parsed:
    """A post body parsed and prepared for email, with what preparing it found."""

    tokens: list[Token]
    env: EnvType
    base_url: str
    first_line: int
    findings: list[Finding] = field(default_factory=list)

    def resolve(self, url: str) -> str:
        return urljoin(self.base_url, url.strip())


def inline_text(token: Token) -> str:
    """The words of an inline token, without markup or URLs."""
    parts: list[str] = []
    for child in token.children or ():
        if child.type in ("text", "code_inline"):
            parts.append(child.content)
        elif child.type in ("softbreak", "hardbreak"):
            parts.append(" ")
        elif child.type == "image":
            parts.append(child.content)
    return "".join(parts)


class _LinksKept(MarkdownIt):
    """A parser that keeps unsafe links, so that ``to_blocks`` can report and drop them."""

    def validateLink(self, url: str) -> bool:
        return True


class EmailMarkdown:
    """A Markdown parser set up for email, with the theme's inline styles."""

    def __init__(self, styles: dict[str, str]) -> None:
        self.styles = styles
        self.md = (
            _LinksKept("commonmark", {"linkify": True, "html": True})
            .enable(["table", "strikethrough", "linkify"])
            .use(footnote_plugin)
            # ![QR code](qr.png){width=240}: the only attributes a post may set.
            .use(attrs_plugin, after=("image",), allowed=("width", "height"))
            .use(anchors_plugin, min_level=1, max_level=int(SECTION_LEVELS[-1][1]))
        )
        for name, rule in _email_rules(styles).items():
            self.md.add_render_rule(name, rule)

    def parse(self, body: str, base_url: str, first_line: int = 1) -> Parsed:
        """Parse and prepare ``body``: URLs resolve against ``base_url``, lines count from
        ``first_line`` (the body's line in the file)."""
        env: EnvType = {}
        parsed = Parsed(self.md.parse(body, env), env, base_url, first_line)
        for token, line in _walk(parsed.tokens, first_line):
            self._prepare(token, line, parsed)
        return parsed

    def sections(self, parsed: Parsed) -> list[Section]:
        """The body's top-level blocks, split before each ``#``/``##`` heading."""
        sections = [Section("", "", [])]
        for group in _top_level(parsed.tokens):
            head = group[0]
            if head.type == "heading_open" and head.tag in SECTION_LEVELS:
                anchor = str(head.attrGet("id") or "")
                sections.append(Section(inline_text(group[1]).strip(), anchor, []))
            sections[-1].groups.append(group)
        return [s for s in sections if s.groups]

    def to_blocks(self, parsed: Parsed, groups: list[list[Token]] | None = None) -> list[Block]:
        """Lay out the body (or ``groups`` of its top-level tokens) as email blocks: runs of
        styled HTML, dividers included, and lone images."""
        blocks: list[Block] = []
        pending: list[str] = []
        for group in _top_level(parsed.tokens) if groups is None else groups:
            single = _lone_image(group)
            if single is None:
                pending.append(self._group_html(group, parsed))
                continue
            if pending:
                blocks.append(Block("html", html=Markup("".join(pending))))
                pending = []
            blocks.append(single)
        if pending:
            blocks.append(Block("html", html=Markup("".join(pending))))
        return blocks

    def _prepare(self, token: Token, line: int | None, parsed: Parsed) -> None:
        """Make the token's URL absolute (or drop it if unsafe) and give it its inline style."""
        for attr in ("href", "src"):
            url = token.attrGet(attr)
            if url is None:
                continue
            url = str(url)
            if is_safe_url(url):
                token.meta[f"written_{attr}"] = url
                token.attrSet(attr, parsed.resolve(url))
            else:
                scheme = urlsplit(url.strip()).scheme.lower()
                del token.attrs[attr]
                message = f"removed a {scheme}: link ({url[:60]})"
                parsed.findings.append(Finding("error", "unsafe-link", message, line))
        if token.nesting != -1:
            style = self.styles.get(token.tag if token.type != "code_inline" else "code")
            if style:
                own = str(token.attrGet("style") or "")  # table alignment
                token.attrSet("style", style + own)

    def _group_html(self, tokens: list[Token], parsed: Parsed) -> str:
        """One top-level block as HTML; sanitized if it holds raw HTML."""
        html = self.md.renderer.render(tokens, self.md.options, parsed.env)
        raw = [
            (t, line) for t, line in _walk(tokens, parsed.first_line) if t.type.startswith("html_")
        ]
        if raw:
            for token, line in raw:
                removed = unsafe_parts(token.content)
                if removed:
                    message = "raw HTML cleaned: removed " + ", ".join(removed)
                    parsed.findings.append(Finding("warning", "raw-html", message, line))
            html = clean_html(html, parsed.resolve)
        return html


def _email_rules(styles: dict[str, str]) -> dict[str, Callable[..., str]]:
    """Render rules for what email needs unlike a web page: styled code, footnotes that
    do not rely on in-page anchors (most clients drop them), a divider drawn as MJML draws
    one (a bordered paragraph, which Outlook shows), a table that scrolls in its own box
    rather than breaking its words to fit a phone."""
    pre, pre_code = styles.get("pre", ""), styles.get("pre_code", "")
    sup, li = styles.get("sup", ""), styles.get("li", "")
    hr, ol = styles.get("hr", ""), styles.get("ol", "")
    rule = styles.get("rule", "border-top:solid 1px #e5e7eb;font-size:1px;margin:0;")
    rule_box = styles.get("rule_box", "padding:4px 0 8px;")
    table_box = styles.get("table_box", "overflow-x:auto;")

    def code(_renderer: Any, tokens: Sequence[Token], idx: int, *_: Any) -> str:
        content = escape(tokens[idx].content)
        return f'<pre style="{pre}"><code style="{pre_code}">{content}</code></pre>\n'

    def table_open(renderer: Any, tokens: Sequence[Token], idx: int, *rest: Any) -> str:
        return f'<div style="{table_box}">' + renderer.renderToken(tokens, idx, *rest)

    def footnote_ref(_renderer: Any, tokens: Sequence[Token], idx: int, *_: Any) -> str:
        return f'<sup style="{sup}">[{tokens[idx].meta["id"] + 1}]</sup>'

    return {
        "fence": code,
        "code_block": code,
        "footnote_ref": footnote_ref,
        "hr": lambda *_: f'<div class="rule" style="{rule_box}"><p style="{rule}"></p></div>\n',
        "table_open": table_open,
        "table_close": lambda *_: "</table></div>\n",
        "footnote_block_open": lambda *_: f'<hr style="{hr}">\n<ol style="{ol}font-size:14px;">\n',
        "footnote_block_close": lambda *_: "</ol>\n",
        "footnote_open": lambda *_: f'<li style="{li}">',
        "footnote_anchor": lambda *_: "",
    }


def _walk(tokens: Sequence[Token], first_line: int) -> Iterator[tuple[Token, int | None]]:
    """Every token, inline children included, with its line in the file."""
    for token in tokens:
        line = first_line + token.map[0] if token.map else None
        yield token, line
        for child in token.children or ():
            yield child, line


def _top_level(tokens: list[Token]) -> Iterator[list[Token]]:
    """Split the token stream into top-level blocks (an opening token through its closing one)."""
    start = 0
    depth = 0
    for index, token in enumerate(tokens):
        depth += token.nesting
        if depth == 0:
            yield tokens[start : index + 1]
            start = index + 1


def _lone_image(group: list[Token]) -> Block | None:
    """A paragraph holding only an image (maybe linked) becomes a responsive image block."""
    if len(group) != 3 or group[0].type != "paragraph_open":
        return None
    children = [
        c for c in group[1].children or () if not (c.type == "text" and not c.content.strip())
    ]
    href = ""
    if len(children) == 3 and children[0].type == "link_open" and children[2].type == "link_close":
        href = str(children[0].attrGet("href") or "")
        children = children[1:2]
    if len(children) != 1 or children[0].type != "image":
        return None
    image = children[0]
    if not image.attrGet("src"):
        return None
    return Block(
        "image",
        src=str(image.attrGet("src") or ""),
        source=str(image.meta.get("written_src", "")),
        alt=image.content,
        href=href,
        title=str(image.attrGet("title") or ""),
        width=_pixels(image.attrGet("width")),
    )


def _pixels(value: str | int | float | None) -> int | None:
    """``240`` or ``240px``: a size in pixels; anything else (``50%``) is no size."""
    text = str(value or "").strip().removesuffix("px")
    return int(text) if text.isdigit() and 0 < int(text) <= 10_000 else None
