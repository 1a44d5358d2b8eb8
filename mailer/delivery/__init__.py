"""Delivery backends: one module each, one small protocol.

A backend takes a ``Batch`` and delivers its envelopes, returning an ``Outcome`` per
envelope it attempted. An envelope without an outcome was not tried (the backend
stopped early) and goes back to the queue. A failure of the whole batch is raised as
a ``TransientDeliveryError`` (nothing went out; try again later), an
``UncertainDeliveryError`` (it may have gone out), a ``PermanentDeliveryError``
(trying again will not help) or a ``ConfigError`` (credentials refused: the campaign
pauses), so retry logic keys on the type alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

from mailer.config import Settings, refuse_local_defaults
from mailer.delivery.message import Batch
from mailer.tokens import Signer

__all__ = ["POLICY_REFUSAL", "Backend", "Outcome", "make_backend"]


# The start of a failed reader's error when the server refused the mail by policy (SMTP
# 5.7.x: taken for spam, blocked): the address is fine, so the reader stays on the list.
POLICY_REFUSAL = "refused by policy"


@dataclass(frozen=True)
class Outcome:
    """What became of one envelope.

    ``sent``, ``failed`` and ``unknown`` are what the ledger records. ``deferred``: the
    server refused this reader for now (greylisting, a full mailbox): the row goes back
    to the queue with the reason and fails once its batch has no tries left. ``retry``:
    not accepted, for a reason that is the server's and not the reader's (busy, our
    sender refused): back to the queue; the reason is the batch's, so it reaches the
    campaign if the batch gives up. ``bounce="hard"``: the address does not exist, and
    comes off the list as a provider's bounce event takes it off; ``"block"``: refused by
    policy (taken for spam), counted as a provider's block is, the reader kept.
    """

    key: str
    status: Literal["sent", "failed", "unknown", "deferred", "retry"]
    provider_id: str = ""
    error: str = ""
    bounce: Literal["hard", "block", ""] = ""


class Backend(Protocol):
    name: str

    def send(self, batch: Batch) -> list[Outcome]: ...


def make_backend(settings: Settings, signer: Signer) -> Backend:
    """The backend ``MAILER_BACKEND`` names; a real one refuses the local defaults that
    ``refuse_local_defaults`` names (a weak secret lets anyone forge readers' links).
    ``signer`` signs the bounce addresses (VERP) of the SMTP backend."""
    refuse_local_defaults(settings)
    from mailer.delivery.alignment import check_identity
    from mailer.delivery.identity import Identity

    check_identity(settings)  # a freemail From is refused; misalignment is warned of
    identity = Identity.of(settings)
    if settings.backend == "sendgrid":
        from mailer.delivery.sendgrid import SendGridBackend

        return SendGridBackend(
            settings.sendgrid_api_key, settings.sendgrid_host, settings.delivery_timeout, identity
        )
    if settings.backend == "smtp":
        from mailer.delivery.dkim import dkim_key
        from mailer.delivery.smtp import SmtpBackend

        verp = None
        if settings.bounce_domain:
            from mailer.delivery.verp import Verp

            verp = Verp(signer, settings.bounce_domain)
        return SmtpBackend(
            settings.smtp_host,
            settings.smtp_port,
            settings.smtp_security,
            settings.smtp_username,
            settings.smtp_password,
            settings.delivery_timeout,
            dkim_key(settings),
            verp,
            identity,
            settings.smtp_connections,
        )
    from mailer.delivery.outbox import OutboxBackend

    return OutboxBackend(settings.outbox_dir, identity)
