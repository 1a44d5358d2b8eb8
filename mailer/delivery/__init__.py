"""Delivery backends: one module each, one small protocol.

A backend takes a ``Batch`` and delivers its envelopes, returning an ``Outcome`` per
envelope it attempted. An envelope without an outcome was not sent (the backend
stopped early, or the server said "later" for that reader) and goes back to the
queue. A failure of the whole batch is raised as a ``TransientDeliveryError``
(nothing went out; try again later), an ``UncertainDeliveryError`` (it may have gone
out), a ``PermanentDeliveryError`` (trying again will not help) or a ``ConfigError``
(credentials refused: the campaign pauses), so retry logic keys on the type alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

from mailer.config import MIN_SECRET_BYTES, Settings
from mailer.errors import ConfigError
from mailer.message import Batch

__all__ = ["Backend", "Outcome", "make_backend"]


@dataclass(frozen=True)
class Outcome:
    key: str
    status: Literal["sent", "failed", "unknown"]
    provider_id: str = ""
    error: str = ""


class Backend(Protocol):
    name: str

    def send(self, batch: Batch) -> list[Outcome]: ...


def make_backend(settings: Settings) -> Backend:
    """The backend ``MAILER_BACKEND`` names; a real one refuses the published local secret
    or a short one, with which anyone could forge every reader's unsubscribe and tracking
    links."""
    if settings.backend != "outbox" and "MAILER_SECRET_KEYS" in settings.unsafe_local_defaults():
        raise ConfigError(
            f"MAILER_SECRET_KEYS is the published local default or shorter than "
            f"{MIN_SECRET_BYTES} bytes: set a secret from `mailer secret` before sending "
            f"through {settings.backend}"
        )
    if settings.backend == "sendgrid":
        from mailer.delivery.sendgrid import SendGridBackend

        return SendGridBackend(
            settings.sendgrid_api_key, settings.sendgrid_host, settings.delivery_timeout
        )
    if settings.backend == "smtp":
        from mailer.delivery.smtp import DkimKey, SmtpBackend

        key = settings.dkim_private_key_file
        return SmtpBackend(
            settings.smtp_host,
            settings.smtp_port,
            settings.smtp_security,
            settings.smtp_username,
            settings.smtp_password,
            settings.delivery_timeout,
            DkimKey(key, settings.dkim_selector, settings.dkim_domain) if key else None,
        )
    from mailer.delivery.outbox import OutboxBackend

    return OutboxBackend(settings.outbox_dir)
