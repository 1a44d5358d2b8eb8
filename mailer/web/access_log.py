"""Access logs without readers' tokens.

The path of a reader's link is a key: ``/unsubscribe/<token>`` unsubscribes them,
``/confirm/<token>`` confirms them, ``/o/<token>.gif`` and ``/c/<token>/<n>`` speak for
them in the stats. Uvicorn's access log writes each path in full, so whoever reads the
logs (a log shipper, a support desk) could use them. This filter keeps the route and
drops the token.
"""

from __future__ import annotations

import logging
import re

__all__ = ["REDACT_TOKENS", "redact"]

_TOKEN = re.compile(r"^(/+(?:confirm|unsubscribe|o|c)/)[^/?#]+")


def redact(path: str) -> str:
    """``path`` with the token of a reader's link replaced by ``…`` (one match at most, at the
    start: a fifth of the time of ``sub``, on every logged request)."""
    token = _TOKEN.match(path)
    return path if token is None else f"{token[1]}…{path[token.end() :]}"


class _RedactTokens(logging.Filter):
    """For ``uvicorn.access``, whose records carry (client, method, path, version, status)."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str):
            record.args = (*args[:2], redact(args[2]), *args[3:])
        return True


REDACT_TOKENS = _RedactTokens()
