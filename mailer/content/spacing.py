"""A space where a filled-in name in Latin letters meets Chinese or Japanese text.

"您订阅了{publication}。" with "The Weekly" reads "您订阅了 The Weekly。": CJK typography sets a
space between CJK characters and Latin words or numbers, but the string cannot carry it, as
the same string takes a Chinese name too ("您订阅了周刊。"). The space is put where a value
meets its template only, never inside either (a date such as "2026年2月" keeps its form).
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any

from mailer.content.textwidth import is_wide

__all__ = ["Spaced", "fill"]

_FIELD = re.compile(r"\{(\w+)\}")


class Spaced(str):
    """A string of ``templates/strings/*.toml`` whose ``format`` spaces its values (``fill``)."""

    __slots__ = ()

    def format(self, *args: Any, **values: Any) -> str:
        return fill(self, **values) if not args else str.format(self, *args, **values)


def fill(template: str, **values: object) -> str:
    """``template`` with each ``{name}`` given replaced (others left as they are), spaced from
    CJK text around it when it starts or ends in a Latin letter or digit, and the other way."""
    out: list[str] = []
    at = 0
    for match in _FIELD.finditer(template):
        name = match.group(1)
        if name not in values:
            continue
        value = str(values[name])
        before = template[at : match.start()]
        out.append(before)
        left = (out[-1] or "".join(out))[-1:]
        if value and left and _apart(left, value[0]):
            out.append(" ")
        out.append(value)
        at = match.end()
        after = template[at : at + 1]
        if value and after and _apart(value[-1], after):
            out.append(" ")
    out.append(template[at:])
    return "".join(out)


def _apart(one: str, other: str) -> bool:
    """Two neighbours a space should part: a CJK letter and a Latin letter or digit."""
    return (_cjk(one) and _latin(other)) or (_latin(one) and _cjk(other))


def _cjk(ch: str) -> bool:
    return is_wide(ch) and unicodedata.category(ch).startswith("L")


def _latin(ch: str) -> bool:
    return ch.isascii() and ch.isalnum()
