"""What the commands share, apart from ``mailer.cli`` so that listing them loads none of it."""

from __future__ import annotations

from mailer.runtime import Runtime

__all__ = ["Context"]


class Context(Runtime):
    """What commands share: the settings, and the database and backend once asked for."""
