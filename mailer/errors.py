"""The one error tree of the project.

Everything the CLI may show a user derives from ``MailerError``: its message is
one line that names the file, line or setting at fault and says what to do.
Errors from lower libraries are translated at the boundary with ``raise ... from``.
"""

from __future__ import annotations

from pathlib import Path

__all__ = [
    "ConfigError",
    "InvalidAddress",
    "MailerError",
    "PostError",
    "SchemaError",
    "TemplateError",
    "TokenError",
    "TokenExpired",
]


class MailerError(Exception):
    """Base of every error the project raises on purpose."""


class ConfigError(MailerError):
    """A setting is missing or has a value that cannot work; the message names it."""


class PostError(MailerError):
    """A post cannot be loaded or rendered: names the file and, where known, the line."""

    def __init__(self, path: Path | str, problem: str, line: int | None = None) -> None:
        self.path = Path(path)
        self.problem = problem
        self.line = line
        where = f"{self.path}:{line}" if line else str(self.path)
        super().__init__(f"{where}: {problem}")


class TemplateError(MailerError):
    """A template is missing or broken (an operator's override, usually)."""


class SchemaError(MailerError):
    """The database cannot be used as it is: unreachable, or behind the code's migrations."""


class InvalidAddress(MailerError):
    """An email address that cannot be delivered to (bad syntax, too long, empty)."""


class TokenError(MailerError):
    """A signed token that is tampered, expired, or made for another purpose."""


class TokenExpired(TokenError):
    """A genuine token, too old to be honoured."""
