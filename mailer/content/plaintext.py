"""The plain-text part, written from the Markdown tokens rather than scraped from the HTML.

Headings stay headings, lists stay lists, quotes keep their ``>``, and every link
is written out after its text, so a reader of the text part can follow them all.
"""

from __future__ import annotations

from html import unescape

import nh3
from markdown_it.token import Token

from mailer.content.markdown import Parsed
from mailer.content.textwidth import display_width

__all__ = ["to_text"]

_RULE = "-" * 20


def to_text(parsed: Parsed) -> str:
    """The post body as plain text."""
    writer = _Writer()
    writer.write(parsed.tokens)
    return "\n".join(writer.lines).strip("\n")


def underline(text: str, char: str) -> str:
    """A line of ``char`` as wide as ``text`` looks."""
    return char * max(display_width(text), 3)


def _inline_with_links(token: Token) -> str:
    parts: list[str] = []
    links: list[tuple[str, int]] = []  # (href, where its text starts in parts)
    for child in token.children or ():
        kind = child.type
        if kind in ("text", "code_inline"):
            parts.append(child.content)
        elif kind in ("softbreak", "hardbreak"):
            parts.append("\n")
        elif kind == "link_open":
            links.append((str(child.attrGet("href") or ""), len(parts)))
        elif kind == "link_close" and links:
            href, start = links.pop()
            label = "".join(parts[start:]).strip()
            if href and _bare(href) != _bare(label):
                parts.append(f" ({href})")
        elif kind == "image":
            src = str(child.attrGet("src") or "")
            parts.append(f"{child.content} ({src})" if child.content else src)
        elif kind == "footnote_ref":
            parts.append(f"[{child.meta['id'] + 1}]")
    return "".join(parts)


def _bare(url: str) -> str:
    for prefix in ("mailto:", "https://", "http://"):
        url = url.removeprefix(prefix)
    return url.rstrip("/")


def _strip_tags(html: str) -> str:
    return unescape(nh3.clean(html, tags=set())).strip()


class _Writer:
    """Walks block tokens, keeping the prefixes of the quotes and list items it is inside."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.prefixes: list[str] = []
        self.marker: str | None = None  # the list marker the next line starts with
        self.numbers: list[int | None] = []  # per open list: next number, None for bullets
        self.heading_level = 0
        self.row: list[str] | None = None
        self.tight = False  # inside a paragraph of a tight list: no blank line before it
        self.gap_next = False  # the next block starts after a blank line whatever it is

    def write(self, tokens: list[Token]) -> None:
        for token in tokens:
            handler = getattr(self, "_" + token.type, None)
            if handler is not None:
                handler(token)

    def emit(self, text: str, *, gap: bool = True) -> None:
        if (gap or self.gap_next) and self.lines and self.lines[-1].strip(" >"):
            self.lines.append("".join(self.prefixes).rstrip())
        self.gap_next = False
        for line in text.split("\n"):
            if self.marker is not None:
                prefix = "".join(self.prefixes[:-1]) + self.marker
                self.marker = None
            else:
                prefix = "".join(self.prefixes)
            self.lines.append((prefix + line).rstrip())

    def _inline(self, token: Token) -> None:
        text = _inline_with_links(token)
        if self.heading_level:
            level, self.heading_level = self.heading_level, 0
            if level <= 2:
                self.emit(f"{text}\n{underline(text, '=' if level == 1 else '-')}")
            else:
                self.emit("#" * level + " " + text)
        elif self.row is not None:
            self.row.append(text.replace("\n", " "))
        else:
            self.emit(text, gap=not self.tight)

    def _heading_open(self, token: Token) -> None:
        self.heading_level = int(token.tag[1])

    def _paragraph_open(self, token: Token) -> None:
        self.tight = token.hidden

    def _paragraph_close(self, token: Token) -> None:
        self.tight = False

    def _bullet_list_open(self, token: Token) -> None:
        self.gap_next = not self.numbers
        self.numbers.append(None)

    def _ordered_list_open(self, token: Token) -> None:
        self.gap_next = not self.numbers
        self.numbers.append(int(token.attrGet("start") or 1))

    def _bullet_list_close(self, token: Token) -> None:
        self.numbers.pop()

    _ordered_list_close = _bullet_list_close

    def _list_item_open(self, token: Token) -> None:
        number = self.numbers[-1]
        self.marker = "- " if number is None else f"{number}. "
        if number is not None:
            self.numbers[-1] = number + 1
        self.prefixes.append(" " * len(self.marker))

    def _list_item_close(self, token: Token) -> None:
        self.prefixes.pop()
        self.marker = None

    def _blockquote_open(self, token: Token) -> None:
        if self.lines and self.lines[-1].strip(" >"):
            self.lines.append("".join(self.prefixes).rstrip())
        self.prefixes.append("> ")

    def _blockquote_close(self, token: Token) -> None:
        self.prefixes.pop()

    def _fence(self, token: Token) -> None:
        self.emit("\n".join("    " + line for line in token.content.rstrip("\n").split("\n")))

    _code_block = _fence

    def _hr(self, token: Token) -> None:
        self.emit(_RULE)

    def _html_block(self, token: Token) -> None:
        text = _strip_tags(token.content)
        if text:
            self.emit(text)

    def _table_open(self, token: Token) -> None:
        self.gap_next = True

    def _tr_open(self, token: Token) -> None:
        self.row = []

    def _tr_close(self, token: Token) -> None:
        self.emit(" | ".join(self.row or ()), gap=False)
        self.row = None

    def _thead_close(self, token: Token) -> None:
        self.emit(_RULE, gap=False)

    def _footnote_block_open(self, token: Token) -> None:
        self.emit(_RULE)

    def _footnote_open(self, token: Token) -> None:
        self.marker = f"[{token.meta['id'] + 1}] "
        self.prefixes.append(" " * len(self.marker))

    def _footnote_close(self, token: Token) -> None:
        self.prefixes.pop()
        self.marker = None
