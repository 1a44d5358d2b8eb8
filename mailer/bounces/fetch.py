"""One reading of the bounce mailbox, for ``mailer bounces fetch`` and beat's task."""

from __future__ import annotations

from collections.abc import Callable

from mailer.bounces.ingest import ingest_message
from mailer.bounces.mailbox import BounceMailbox
from mailer.delivery.verp import Verp
from mailer.runtime import Runtime

__all__ = ["fetch_bounces", "message_handler"]


def message_handler(rt: Runtime) -> Callable[[bytes], str]:
    """Reads, records and applies one returned message; returns what it was."""
    verp = Verp(rt.signer, rt.settings.bounce_domain)
    return lambda data: ingest_message(rt.sessions, rt.settings, verp, data)


def fetch_bounces(rt: Runtime, progress: Callable[[int, int], None] | None = None) -> list[str]:
    """Read every message in the bounce mailbox; what each one was, in order."""
    return BounceMailbox.from_settings(rt.settings).fetch(message_handler(rt), progress)
