"""The confirmation email of double opt-in: rendered from ``email/confirm.*``, sent at once.

Opt-in (``subscribers.optin``) decides when one is owed; this builds and sends it, so
the subscriber store needs neither the renderer nor a backend. The Runtime wires it.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable

from mailer.config import Settings
from mailer.content.render import Renderer
from mailer.delivery import Backend
from mailer.delivery.message import Batch, Envelope, Sender

__all__ = ["ConfirmationMail"]


class ConfirmationMail:
    """Mails one reader the link that confirms their address: what ``OptIn`` is handed as
    its ``SendConfirmation``."""

    def __init__(
        self,
        settings: Settings,
        renderer: Renderer,
        backend: Backend,
        lang: Callable[[], str] | None = None,
    ) -> None:
        self.settings = settings
        self.renderer = renderer
        self.backend = backend
        # The publication's language now (mailer.store.publication_lang); MAILER_LANG alone
        # where no database is at hand.
        self.lang = lang or (lambda: settings.lang or "en")

    def __call__(self, subscriber_id: int, address: str, name: str, confirm_url: str) -> None:
        s = self.settings
        lang = self.lang()
        html, text = self.renderer.render_notice(
            "confirm", lang, confirm_url=confirm_url, days=s.confirm_link_days
        )
        strings = self.renderer.templates.strings(lang)
        subject = strings["confirm_subject"].format(publication=s.publication_name)
        # Each confirmation is its own message: a unique key, so a unique Message-ID.
        key = f"confirm-{subscriber_id}-{secrets.token_hex(6)}"
        envelope = Envelope(address, name, key)
        self.backend.send(
            Batch(subject, html, text, Sender(s.sender_email, s.sender_name), (envelope,))
        )
