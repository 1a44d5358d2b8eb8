"""Text from outside, made safe to print: a reader's name, a provider's error, a subject.

A terminal obeys control characters (``ESC[2J`` clears the screen, ``ESC]0;…BEL``
retitles the window, the one-byte C1 CSI does what ``ESC[`` does), bidi overrides
reorder what is shown, and rich reads ``[brackets]`` as markup. Names in the database
may predate the checks at the door, so the CLI cleans what it prints, not what it stores.
"""

from __future__ import annotations

from rich.markup import escape

__all__ = ["printable", "shown"]

# C0, DEL, C1; U+2028/U+2029 (line and paragraph separators); the bidi embeddings,
# overrides and isolates (U+202A–U+202E, U+2066–U+2069).
_UNSAFE = (
    *range(0x20),
    *range(0x7F, 0xA0),
    0x2028,
    0x2029,
    *range(0x202A, 0x202F),
    *range(0x2066, 0x206A),
)
_VISIBLE = {code: f"\\u{code:04x}" for code in _UNSAFE}


def printable(value: object) -> str:
    """``str(value)`` with each of those characters written as a visible ``\\uXXXX``
    (which is also a valid escape inside a JSON string)."""
    return str(value).translate(_VISIBLE)


def shown(value: object) -> str:
    """``printable(value)`` escaped for rich markup: for ``console.print`` and table cells."""
    return escape(printable(value))
