"""The one clock: aware UTC datetimes, so stored times compare across SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt

__all__ = ["utcnow"]


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)
