"""The one error tree of the project.

Everything the CLI may show a user derives from ``MailerError``: its message is
one line that names the file, line or setting at fault and says what to do.
Errors from lower libraries are translated at the boundary with ``raise ... from``.
"""

from __future__ import annotations

from pathlib import Path

__all__ = [
    "ConfigError",
    "DeliveryError",
    "InvalidAddress",
    "MailerError",
    "PermanentDeliveryError",
    "PostError",
    "SchemaError",
    "TemplateError",
    "TokenError",
    "TokenExpired",
    "TransientDeliveryError",
    "UncertainDeliveryError",
    "UnsafeHeaderValue",
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


class UnsafeHeaderValue(MailerError, ValueError):
    """Text bound for a mail header that could change the message's structure (an RFC 2047
    encoded word, a control or line-separator character, an over-long value)."""

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        self.problem = problem
        super().__init__(f"{field}: {problem}")


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


class DeliveryError(MailerError):
    """A backend could not deliver a batch."""


class TransientDeliveryError(DeliveryError):
    """Nothing of the batch was accepted and trying again later may work (429, 5xx, no connection).

    ``retry_after`` is the provider's own hint in seconds, when it gave one.
    """

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PermanentDeliveryError(DeliveryError):
    """The provider refused the batch and will refuse it again (400, 401, 403, 413)."""


class UncertainDeliveryError(DeliveryError):
    """The request went out but no answer came back (a read timeout): it may have been sent.

    Its rows become ``unknown``, to be settled from the provider's events, never resent blindly.
    """
