"""CSV cells a spreadsheet would run as a formula (OWASP: CSV injection).

An export makes such a cell text with a leading ``'``; an import takes that ``'`` off
again, so the project's own export imports back as the values it was made from.
"""

from __future__ import annotations

__all__ = ["FORMULA_START", "as_text", "from_text"]

FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def as_text(cell: str) -> str:
    """``cell`` as a spreadsheet shows it instead of running it."""
    return f"'{cell}" if cell.startswith(FORMULA_START) else cell


def from_text(cell: str) -> str:
    """What ``as_text`` was given (a ``'`` before anything else is the cell's own)."""
    return cell[1:] if cell.startswith("'") and cell[1:].startswith(FORMULA_START) else cell
