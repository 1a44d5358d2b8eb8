"""A post too long for Gmail becomes a shorter email that continues on the web.

Gmail hides everything after about 102 KB of HTML, the footer and its unsubscribe link
included. An email over ``BUDGET`` keeps as many whole sections (``#``/``##`` headings)
as fit, or, when not even one does, as many blocks (or list items) of the first section
as fit; it then ends with a "continue reading" link to the web version at the first
section left out. The size that counts is what a reader gets: each link as a tracking
link, and that reader's own unsubscribe link, not the edition's placeholders.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from markdown_it.token import Token

from mailer.content.markdown import Section
from mailer.edition import UNSUBSCRIBE_PLACEHOLDER, VIEW_PLACEHOLDER

__all__ = ["BUDGET", "Cut", "delivered_size", "shorten"]

# Gmail clips at about 102 KB; this leaves room for what a provider adds (its own
# tracking, a header of a forwarded copy).
BUDGET = 95_000
# A long token of a reader's links (two ids of 10 digits and a MAC: tokens.Signer.sign_ids).
_TOKEN = "x" * 40
_WEB_HREF = re.compile(r'href="https?://[^"]*"')
_LISTS = ("bullet_list_open", "ordered_list_open")


@dataclass(frozen=True)
class Cut:
    """What a shortened email keeps, and where on the web the reader continues."""

    groups: list[list[Token]]  # top-level blocks of the body that stay in the email
    moved: list[Section]  # sections that are, whole or in part, only on the web
    anchor: str  # the heading id to continue at ("" for the top of the page)


def delivered_size(html: str, public_url: str, slug: str) -> int:
    """Bytes of HTML a reader gets, tracked or not: what Gmail measures."""
    html = html.replace(UNSUBSCRIBE_PLACEHOLDER, f"{public_url}/unsubscribe/{_TOKEN}")
    html = html.replace(VIEW_PLACEHOLDER, f"{public_url}/archive/{slug}")
    tracked = _WEB_HREF.sub(f'href="{public_url}/c/{_TOKEN}/9999"', html)
    pixel = len(f'<img src="{public_url}/o/{_TOKEN}.gif" width="1" height="1" alt="" />') + 64
    return max(len(html.encode()), len(tracked.encode()) + pixel)


def shorten(sections: list[Section], size_of: Callable[[Cut], int], budget: int) -> Cut:
    """The longest cut whose email (``size_of``) is within ``budget``: at a section boundary
    if one whole section fits, otherwise inside the first section that does not."""
    whole = [_section_cut(sections, kept) for kept in range(1, len(sections))]
    best = _last_fitting(whole, size_of, budget)
    kept = 0 if best is None else best + 1
    if best is not None and any(s.anchor for s in sections[:kept]):
        return whole[best]
    inside = [
        Cut(
            [g for s in sections[:kept] for g in s.groups] + prefix,
            sections[kept:],
            sections[kept].anchor,
        )
        for prefix in _prefixes(sections[kept].groups)
    ]
    found = _last_fitting(inside, size_of, budget)
    return inside[found] if found is not None else _section_cut(sections, kept)


def _section_cut(sections: list[Section], kept: int) -> Cut:
    groups = [group for section in sections[:kept] for group in section.groups]
    return Cut(groups, sections[kept:], sections[kept].anchor)


def _last_fitting(cuts: list[Cut], size_of: Callable[[Cut], int], budget: int) -> int | None:
    """Binary search: cuts are in order of size, so the last that fits is found in log n."""
    low, high, found = 0, len(cuts) - 1, None
    while low <= high:
        middle = (low + high) // 2
        if size_of(cuts[middle]) <= budget:
            found, low = middle, middle + 1
        else:
            high = middle - 1
    return found


def _prefixes(groups: list[list[Token]]) -> list[list[list[Token]]]:
    """Every shorter start of a section, block by block, and item by item inside a list
    (a weekly's 400 links are often one list)."""
    prefixes: list[list[list[Token]]] = []
    for index, group in enumerate(groups):
        before = groups[:index]
        if index:
            prefixes.append(before)
        if group[0].type in _LISTS:
            items = _items(group)
            prefixes.extend(
                [*before, [group[0], *_flat(items[:count]), group[-1]]]
                for count in range(1, len(items))
            )
    return prefixes


def _items(group: list[Token]) -> list[list[Token]]:
    """The items of a list's tokens, each from its opening to its closing token."""
    items: list[list[Token]] = []
    depth = 0
    for token in group[1:-1]:
        if depth == 0:
            items.append([])
        items[-1].append(token)
        depth += token.nesting
    return items


def _flat(items: list[list[Token]]) -> list[Token]:
    return [token for item in items for token in item]
