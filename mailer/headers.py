"""What text from outside may go into a mail header.

A display name, a subject or a sender name ends up in a header that the standard
library folds and encodes. Before CPython 3.11.10 / 3.12.5 (CVE-2024-6923) the
``email`` package decoded RFC 2047 encoded words in a display name and wrote the
decoded CR/LF back out raw, so ``=?utf-8?q?X=0D=0AReply-To:…?=`` became a header of
its own. We do not rely on a patched interpreter: such text is refused where it comes
in (web, CLI, import, settings, front matter) and again where a message is built.
"""

from __future__ import annotations

import re

from mailer.errors import UnsafeHeaderValue

__all__ = ["ENCODED_WORD", "MAX_HEADER_TEXT", "check_header_text", "header_text_problem"]

# RFC 2047: =?charset?encoding?encoded-text?= (lenient: any encoding letter, any text).
ENCODED_WORD = re.compile(r"=\?[^?\s]*\?[A-Za-z]\?[^?]*\?=")
MAX_HEADER_TEXT = 200
# Unicode's Cc (C0 with NUL, CR, LF and TAB; DEL; C1), and U+2028/U+2029 (Zl, Zp): one
# search per value, since every reader's name is checked on every send.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def header_text_problem(value: str, max_length: int = MAX_HEADER_TEXT) -> str | None:
    """Why ``value`` may not go into a header, or None when it may."""
    if len(value) > max_length:
        return f"longer than {max_length} characters"
    control = _CONTROL.search(value)
    if control:
        return f"contains the control character U+{ord(control[0]):04X}"
    if ENCODED_WORD.search(value):
        return "contains an RFC 2047 encoded word (=?…?=)"
    return None


def check_header_text(value: str, field: str, max_length: int = MAX_HEADER_TEXT) -> str:
    """``value`` unchanged, or ``UnsafeHeaderValue`` naming ``field`` and what is wrong."""
    problem = header_text_problem(value, max_length)
    if problem:
        raise UnsafeHeaderValue(field, problem)
    return value
