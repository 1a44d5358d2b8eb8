"""Display width of text as an inbox or terminal shows it: CJK characters take two columns."""

from __future__ import annotations

import unicodedata

__all__ = ["cut", "display_width"]

_SENTENCE_ENDS = "。！？.!?"
_BREAKS = "，、；：,;: \u3000"


def _char_width(ch: str) -> int:
    return 2 if unicodedata.east_asian_width(ch) in "WF" else 1


def display_width(text: str) -> int:
    return sum(_char_width(ch) for ch in text)


def cut(text: str, width: int) -> str:
    """Shorten ``text`` to at most ``width`` columns at a sentence end, else a word or clause break.

    A cut that is not at a sentence end gets an ellipsis.
    """
    text = " ".join(text.split())
    if display_width(text) <= width:
        return text
    used, end = 0, len(text)
    for index, ch in enumerate(text):
        used += _char_width(ch)
        if used > width - 1:  # keep a column for the ellipsis
            end = index
            break
    head = text[:end]
    sentence = max(head.rfind(mark) for mark in _SENTENCE_ENDS)
    if sentence >= len(head) // 2:
        return head[: sentence + 1]
    clause = max(head.rfind(mark) for mark in _BREAKS)
    if clause >= len(head) // 2:
        head = head[:clause]
    return head.rstrip(" ,;:，、；：") + "…"
