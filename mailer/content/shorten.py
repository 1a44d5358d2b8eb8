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

__all__ = ["BUDGET", "Cut", "Estimate", "delivered_size", "shorten"]

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
    tracked = _tracked(html, public_url, slug)
    pixel = len(f'<img src="{public_url}/o/{_TOKEN}.gif" width="1" height="1" alt="" />') + 64
    return max(len(_filled(html, public_url, slug).encode()), len(tracked.encode()) + pixel)


def _filled(html: str, public_url: str, slug: str) -> str:
    html = html.replace(UNSUBSCRIBE_PLACEHOLDER, f"{public_url}/unsubscribe/{_TOKEN}")
    return html.replace(VIEW_PLACEHOLDER, f"{public_url}/archive/{slug}")


def _tracked(html: str, public_url: str, slug: str) -> str:
    """``html`` as a tracked reader gets it, every web link a tracking link."""
    return _WEB_HREF.sub(f'href="{public_url}/c/{_TOKEN}/9999"', _filled(html, public_url, slug))


@dataclass(frozen=True)
class Estimate:
    """Where each section's bytes are in the whole email, so that the size of a cut is
    estimated without compiling it (a compile of a long post takes tens of ms)."""

    base: int  # delivered bytes of the email that keeps no block of the body
    starts: list[int]  # bytes of the body before each section, then the body's own bytes

    @classmethod
    def of(
        cls, whole: str, empty: str, sections: list[Section], public_url: str, slug: str
    ) -> Estimate:
        """From the HTML of the ``whole`` email and of the ``empty`` cut (no block kept):
        their common start and end are the email around the body."""
        full, bare = _tracked(whole, public_url, slug), _tracked(empty, public_url, slug)
        head = _common(full, bare)
        tail = _common(full[::-1], bare[::-1])
        end = max(head, len(full) - tail)
        starts = [head]
        for section in sections[1:]:
            at = full.find(f'id="{section.anchor}"', starts[-1]) if section.anchor else -1
            starts.append(
                max(starts[-1], min(full.rfind("<", 0, at), end)) if at > 0 else starts[-1]
            )
        starts.append(end)
        offsets = [len(full[head:at].encode()) for at in starts]
        return cls(delivered_size(empty, public_url, slug), offsets)

    def of_prefix(self, kept: int, share: float) -> int:
        """The email's size with ``kept`` whole sections and ``share`` of the next one."""
        span = self.starts[kept + 1] - self.starts[kept] if kept + 1 < len(self.starts) else 0
        return self.base + self.starts[kept] + round(span * share)


def shorten(
    sections: list[Section], size_of: Callable[[Cut], int], budget: int, estimate: Estimate
) -> Cut:
    """The longest cut whose email (``size_of``) is within ``budget``: at a section boundary
    if one whole section fits, otherwise inside the first section that does not. Cuts are
    picked by ``estimate`` and each pick is compiled to check it (usually once or twice)."""
    whole = [_section_cut(sections, kept) for kept in range(1, len(sections))]
    guesses = [estimate.of_prefix(kept, 0) for kept in range(1, len(sections))]
    best = _search(whole, guesses, size_of, budget)
    kept = 0 if best is None else best + 1
    if best is not None and any(s.anchor for s in sections[:kept]):
        return whole[best]
    before = [g for s in sections[:kept] for g in s.groups]
    prefixes = _prefixes(sections[kept].groups)
    total = max(1, _weight(sections[kept].groups))
    inside = [
        Cut(before + prefix, sections[kept:], sections[kept].anchor) for prefix, _ in prefixes
    ]
    guesses = [estimate.of_prefix(kept, weight / total) for _, weight in prefixes]
    found = _search(inside, guesses, size_of, budget)
    return inside[found] if found is not None else _section_cut(sections, kept)


def _section_cut(sections: list[Section], kept: int) -> Cut:
    groups = [group for section in sections[:kept] for group in section.groups]
    return Cut(groups, sections[kept:], sections[kept].anchor)


def _search(
    cuts: list[Cut], guesses: list[int], size_of: Callable[[Cut], int], budget: int
) -> int | None:
    """The last cut that fits, ``cuts`` in order of size: compile the one the guesses pick,
    correct the guesses by how far off that one was, and go on from there. A pick that
    fits and whose next cut is guessed over ends the search; one over only narrows it, and
    after a few misses the search halves the rest (log n compiles at worst)."""
    low, high, found, correction, picks = 0, len(cuts) - 1, None, 0, 0
    while low <= high:
        fitting = [i for i in range(low, high + 1) if guesses[i] + correction <= budget]
        if found is not None and not fitting:
            break  # the next cut is guessed over: trust it
        picks += 1
        pick = (low + high) // 2 if picks > 3 else fitting[-1] if fitting else high
        size = size_of(cuts[pick])
        correction = size - guesses[pick]
        if size <= budget:
            found, low = pick, pick + 1
        else:
            high = pick - 1
    return found


def _common(one: str, other: str) -> int:
    """How many characters the two strings start with alike (halving: each comparison of
    slices runs in C, where a loop over 250,000 characters in Python would take ms)."""
    low, high = 0, min(len(one), len(other))
    while low < high:
        middle = (low + high + 1) // 2
        if one[:middle] == other[:middle]:
            low = middle
        else:
            high = middle - 1
    return low


def _weight(groups: list[list[Token]]) -> int:
    """About how many bytes the tokens make: their text and their links' addresses."""
    return sum(
        len(token.content) + len(str(token.attrGet("href") or "")) + 24
        for group in groups
        for token in group
    )


def _prefixes(groups: list[list[Token]]) -> list[tuple[list[list[Token]], int]]:
    """Every shorter start of a section, block by block, and item by item inside a list
    (a weekly's 400 links are often one list), each with its ``_weight``."""
    prefixes: list[tuple[list[list[Token]], int]] = []
    done = 0  # the weight of the groups before this one
    for index, group in enumerate(groups):
        before = groups[:index]
        if index:
            prefixes.append((before, done))
        if group[0].type in _LISTS:
            items = _items(group)
            running = done + _weight([[group[0], group[-1]]])
            for count in range(1, len(items)):
                running += _weight([items[count - 1]])
                prefixes.append(([*before, [group[0], *_flat(items[:count]), group[-1]]], running))
        done += _weight([group])
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
