"""The plain-text part, written from the Markdown tokens rather than scraped from the HTML.

Written to be read: lines wrapped at ``WIDTH`` columns (CJK characters count two and break
anywhere; a URL is never broken), each link's text followed by a number (``text [3]``)
and the numbered addresses listed at the end, once per address. Headings are underlined
(``#``: ``=``, ``##``: ``-``) or marked (``### text``); lists stay lists, quotes keep their
``>``, strikethrough its ``~~``; a table is aligned in columns, or, when too wide for the
line, written as a list of its rows.
"""

from __future__ import annotations

from html import unescape
from urllib.parse import unquote

import nh3
from markdown_it.token import Token

from mailer.content.markdown import Parsed
from mailer.content.textwidth import display_width, is_wide, wrap

__all__ = ["WIDTH", "to_text", "underline"]

WIDTH = 76  # columns of a line; kinsoku punctuation may hang one or two past it
_RULE = "-" * 20
_SOFT = "\x00"  # a soft line break: a space between words, nothing between CJK characters
_GLUE = "\u00a0"  # a space no line breaks at: a link's number stays with its text


def to_text(parsed: Parsed) -> str:
    """The post body as plain text, its links listed at the end."""
    writer = _Writer()
    writer.write(parsed.tokens)
    if writer.refs:
        writer.emit(_RULE, wrapped=False)
        writer.prefixes = []
        for url, number in writer.refs.items():
            writer.emit(f"[{number}] {url}", gap=False, wrapped=False)
    return "\n".join(writer.lines).strip("\n")


def underline(text: str, char: str) -> str:
    """A line of ``char`` as wide as ``text`` looks."""
    return char * max(display_width(text), 3)


def _bare(url: str) -> str:
    url = unquote(url)
    for prefix in ("mailto:", "https://", "http://"):
        url = url.removeprefix(prefix)
    return url.rstrip("/")


def _strip_tags(html: str) -> str:
    return unescape(nh3.clean(html, tags=set())).strip()


def _join_soft(text: str) -> str:
    """Soft breaks as spaces, except between two CJK characters."""
    parts = text.split(_SOFT)
    out = parts[0]
    for part in parts[1:]:
        cjk = out[-1:] and part[:1] and is_wide(out[-1]) and is_wide(part[0])
        out += ("" if cjk else " ") + part
    return out


class _Writer:
    """Walks block tokens, keeping the prefixes of the quotes and list items it is inside."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.prefixes: list[str] = []
        self.marker: str | None = None  # the list marker the next line starts with
        self.numbers: list[int | None] = []  # per open list: next number, None for bullets
        self.heading_level = 0
        self.rows: list[list[str]] | None = None  # the table being read, header row first
        self.right: list[bool] = []  # per column of that table: aligned right
        self.tight = False  # inside a paragraph of a tight list: no blank line before it
        self.gap_next = False  # the next block starts after a blank line whatever it is
        self.refs: dict[str, int] = {}  # each linked address and its number, in order

    def write(self, tokens: list[Token]) -> None:
        for token in tokens:
            handler = getattr(self, "_" + token.type, None)
            if handler is not None:
                handler(token)

    def emit(self, text: str, *, gap: bool = True, wrapped: bool = True) -> None:
        if (gap or self.gap_next) and self.lines and self.lines[-1].strip(" >"):
            self.lines.append("".join(self.prefixes).rstrip())
        self.gap_next = False
        for hard in text.split("\n"):
            if self.marker is not None:
                first = "".join(self.prefixes[:-1]) + self.marker
                self.marker = None
            else:
                first = "".join(self.prefixes)
            rest = "".join(self.prefixes)
            width = max(20, WIDTH - display_width(rest))
            for index, line in enumerate(wrap(hard, width) if wrapped else [hard]):
                line = line.replace(_GLUE, " ").lstrip(" ") if wrapped else line
                self.lines.append(((rest if index else first) + line).rstrip())

    def ref(self, url: str) -> str:
        """`` [n]``: the number of ``url`` in the list at the end (one per address)."""
        number = self.refs.setdefault(url, len(self.refs) + 1)
        return f"{_GLUE}[{number}]"

    def inline(self, token: Token) -> str:
        """An inline token's text, each link's number after its text."""
        parts: list[str] = []
        links: list[tuple[str, int]] = []  # (href, where its text starts in parts)
        for child in token.children or ():
            kind = child.type
            if kind in ("text", "code_inline"):
                parts.append(child.content)
            elif kind == "softbreak":
                parts.append(_SOFT)
            elif kind == "hardbreak":
                parts.append("\n")
            elif kind in ("s_open", "s_close"):
                parts.append("~~")
            elif kind == "link_open":
                links.append((str(child.attrGet("href") or ""), len(parts)))
            elif kind == "link_close" and links:
                href, start = links.pop()
                label = "".join(parts[start:]).strip()
                if href and _bare(href) != _bare(label):
                    parts.append(self.ref(href))
            elif kind == "image":
                src = str(child.attrGet("src") or "")
                parts.append(f"[{child.content or 'image'}]{self.ref(src)}" if src else "")
            elif kind == "footnote_ref":
                parts.append(f"[^{child.meta['id'] + 1}]")
        return _join_soft("".join(parts))

    def _inline(self, token: Token) -> None:
        text = self.inline(token)
        if self.heading_level:
            level, self.heading_level = self.heading_level, 0
            if level <= 2:
                text = text.replace("\n", " ")
                lines = wrap(text, WIDTH)
                widest = max(display_width(line) for line in lines)
                self.emit("\n".join(lines) + "\n" + ("=" if level == 1 else "-") * widest)
            else:
                self.emit("#" * level + " " + text)
        elif self.rows is not None:
            self.rows[-1].append(" ".join(text.split()))
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
        # Code is not re-wrapped: its lines mean what they say.
        code = "\n".join("    " + line for line in token.content.rstrip("\n").split("\n"))
        self.emit(code, wrapped=False)

    _code_block = _fence

    def _hr(self, token: Token) -> None:
        self.emit(_RULE)

    def _html_block(self, token: Token) -> None:
        text = _strip_tags(token.content)
        if text:
            self.emit(text)

    def _table_open(self, token: Token) -> None:
        self.rows, self.right = [], []

    def _tr_open(self, token: Token) -> None:
        if self.rows is not None:
            self.rows.append([])

    def _th_open(self, token: Token) -> None:
        self.right.append("text-align:right" in str(token.attrGet("style") or ""))

    def _table_close(self, token: Token) -> None:
        rows, self.rows = self.rows or [], None
        if not rows:
            return
        columns = max(len(row) for row in rows)
        rows = [row + [""] * (columns - len(row)) for row in rows]
        widths = [max(display_width(row[c]) for row in rows) for c in range(columns)]
        room = WIDTH - display_width("".join(self.prefixes))
        if sum(widths) + 2 * (columns - 1) <= room:
            lines = [self._row(rows[0], widths), "  ".join("-" * w for w in widths)]
            lines += [self._row(row, widths) for row in rows[1:]]
            self.emit("\n".join(lines), wrapped=False)
            return
        # Too wide for a line: each row an item, "header: value" on a line each.
        self.gap_next = True
        for row in rows[1:]:
            self.marker = "- "
            self.prefixes.append("  ")
            fields = [
                f"{head}: {cell}" if head else cell for head, cell in zip(rows[0], row, strict=True)
            ]
            self.emit("\n".join(f for f in fields if f.strip(": ")), gap=False)
            self.prefixes.pop()

    def _row(self, row: list[str], widths: list[int]) -> str:
        cells = []
        aligned = (self.right + [False] * len(row))[: len(row)]
        for cell, width, right in zip(row, widths, aligned, strict=True):
            pad = " " * (width - display_width(cell))
            cells.append(pad + cell if right else cell + pad)
        return "  ".join(cells).rstrip()

    def _footnote_block_open(self, token: Token) -> None:
        self.emit(_RULE)

    def _footnote_open(self, token: Token) -> None:
        self.marker = f"[^{token.meta['id'] + 1}] "
        self.prefixes.append(" " * len(self.marker))

    def _footnote_close(self, token: Token) -> None:
        self.prefixes.pop()
        self.marker = None
