"""Text from outside, made safe to show on a terminal or in a log line.

A terminal obeys control characters (``ESC[2J`` clears the screen, the one-byte C1 CSI
does what ``ESC[`` does), a CR or LF starts what looks like a line (or a log record) of
its own, and bidi overrides reorder what is shown. Each becomes a visible escape.
"""

from __future__ import annotations

__all__ = ["printable"]

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
