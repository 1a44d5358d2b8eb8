"""Text from outside, made safe to print: a reader's name, a provider's error, a subject.

Control characters and bidi overrides become visible escapes (``mailer.printable``), and
rich reads ``[brackets]`` as markup. Names in the database may predate the checks at the
door, so the CLI cleans what it prints, not what it stores.
"""

from __future__ import annotations

from rich.markup import escape

from mailer.printable import printable

__all__ = ["printable", "shown"]


def shown(value: object) -> str:
    """``printable(value)`` escaped for rich markup: for ``console.print`` and table cells."""
    return escape(printable(value))
