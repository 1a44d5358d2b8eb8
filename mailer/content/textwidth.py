"""Display width of text as an inbox or terminal shows it: CJK characters take two columns."""

from __future__ import annotations

import functools
import re
import unicodedata

__all__ = ["cut", "display_width", "is_wide", "wrap"]

_SENTENCE_ENDS = "。！？.!?"
_BREAKS = "，、；：,;: \u3000"


def _char_width(ch: str) -> int:
    return 2 if unicodedata.east_asian_width(ch) in "WF" else 1


def display_width(text: str) -> int:
    if text.isascii():
        return len(text)  # the usual case, and a quick one
    return sum(_char_width(ch) for ch in text)


def is_wide(ch: str) -> bool:
    """A character that takes two columns (CJK): a line may break before or after it."""
    return _char_width(ch) == 2


# Pieces a line is made of: a run of spaces, a URL (never broken), a wide character (Hangul,
# CJK, kana, fullwidth forms), or a run of other characters (a word; a no-break space is
# part of it).
_WIDE = (
    "\u1100-\u115f\u2e80-\ua4cf\uac00-\ud7a3\uf900-\ufaff\ufe30-\ufe4f\uff00-\uff60"
    "\uffe0-\uffe6\U00020000-\U0003fffd"
)
_SPACE = " \t\n\r\f\v\u3000"
# Blind to case in the scheme only: re.I over the wide ranges would double the time the
# pattern takes to compile, which every process pays.
_PIECES = re.compile(
    rf"[{_SPACE}]+|[<(]?(?i:https?|mailto|ftp):[^{_SPACE}]+|[{_WIDE}]|[^{_SPACE}{_WIDE}]+"
)
# Wide punctuation that must not start a line (kinsoku): it stays with what it follows,
# even one or two columns past the width.
_NO_LINE_START = set("，。、；：！？）」』】》〉’”…・ー\u00a0")


@functools.lru_cache(maxsize=8192)
def _piece_width(piece: str) -> int:
    """``display_width`` of a word or character, remembered: the same ones come back often."""
    return display_width(piece)


def wrap(text: str, width: int) -> list[str]:
    """``text`` in lines of at most ``width`` columns: broken at spaces, or anywhere between
    wide (CJK) characters; a URL or a word longer than ``width`` stands alone on its line."""
    if len(text) * 2 <= width or (len(text) <= width and text.isascii()):
        return [text.strip()]  # fits whatever its characters
    lines: list[str] = []
    line, used, space = "", 0, False
    for piece in _PIECES.findall(text):
        if piece[0] in _SPACE:
            space = bool(line)
            continue
        size = _piece_width(piece)
        gap = 1 if space else 0
        stays = piece[0] in _NO_LINE_START and used + size <= width + 2
        if line and used + gap + size > width and not stays:
            lines.append(line)
            line, used = piece, size
        else:
            line += " " * gap + piece
            used += gap + size
        space = False
    if line or not lines:
        lines.append(line)
    return lines


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
