"""Delivery backends: one module each, one small protocol.

A backend takes a ``Batch`` and delivers every envelope in it, returning one
``Outcome`` per envelope, in order. A failure of the whole batch is raised as a
``TransientDeliveryError`` (try again later) or a ``PermanentDeliveryError``
(trying again will not help), so retry logic keys on the type alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

from mailer.config import Settings
from mailer.errors import ConfigError
from mailer.message import Batch

__all__ = ["Backend", "Outcome", "make_backend"]


@dataclass(frozen=True)
class Outcome:
    key: str
    status: Literal["sent", "failed"]
    provider_id: str = ""
    error: str = ""


class Backend(Protocol):
    name: str

    def send(self, batch: Batch) -> list[Outcome]: ...


def make_backend(settings: Settings) -> Backend:
    """The backend ``MAILER_BACKEND`` names."""
    if settings.backend == "outbox":
        from mailer.delivery.outbox import OutboxBackend

        return OutboxBackend(settings.outbox_dir)
    raise ConfigError(f"MAILER_BACKEND={settings.backend}: this backend is not available yet")
