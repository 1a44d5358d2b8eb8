"""The parts a process needs, built once from the settings (and never at import).

This is the only place parts are built: the CLI builds one Runtime per command, a
Celery worker one per process (after the fork), and the web app is handed one
(``mailer.web.create_app``). Each part is built when first asked for, so a command
that never sends opens no backend and one that never reads the store opens no database.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING

from mailer.config import Settings

# Each part's module is imported when the part is first built: `mailer preview` needs
# no database driver, broker client or web framework, and starts faster without them.
if TYPE_CHECKING:
    from sqlalchemy import Engine
    from sqlalchemy.orm import Session, sessionmaker

    from mailer.content.render import Renderer
    from mailer.delivery import Backend
    from mailer.sending.ratelimit import SendRate
    from mailer.store.publication_lang import PublicationLang
    from mailer.tokens import Signer
    from subscribers.optin import OptIn

__all__ = ["Runtime"]


@dataclass
class Runtime:
    settings: Settings

    @cached_property
    def engine(self) -> Engine:
        from mailer.store.db import make_engine

        return make_engine(self.settings.database_url)

    @cached_property
    def sessions(self) -> sessionmaker[Session]:
        """Sessions on a database whose schema is current (else a clear SchemaError)."""
        from mailer.store.db import check_schema, make_sessions

        check_schema(self.engine)
        return make_sessions(self.engine)

    @cached_property
    def backend(self) -> Backend:
        from mailer.delivery import make_backend

        return make_backend(self.settings, self.signer)

    @cached_property
    def publication_lang(self) -> PublicationLang:
        """The language of pages and notices (``MAILER_LANG``, or the latest issue's)."""
        from mailer.store.publication_lang import PublicationLang

        return PublicationLang(self.settings, self.sessions)

    @cached_property
    def signer(self) -> Signer:
        from mailer.tokens import Signer

        return Signer(self.settings.secret_keys)

    @cached_property
    def renderer(self) -> Renderer:
        """Templates, theme and Markdown parser: costly to load, so loaded once."""
        from mailer.content.render import Renderer

        return Renderer(self.settings)

    @cached_property
    def optin(self) -> OptIn:
        """Subscribe, confirm, unsubscribe; its confirmation email goes through ``backend``."""
        from mailer.sending.confirmation import ConfirmationMail
        from subscribers.optin import OptIn

        mail = ConfirmationMail(self.settings, self.renderer, self.backend, self.publication_lang)
        return OptIn(self.settings, self.sessions, self.signer, mail)

    @cached_property
    def send_rate(self) -> SendRate:
        from mailer.sending.ratelimit import make_bucket

        s = self.settings
        return make_bucket(s.send_rate, s.backend, s.batch_size, s.broker_url)

    def close(self) -> None:
        """Close the database connections and the backend's kept connections (an SMTP
        server gets its QUIT) this runtime opened."""
        close = getattr(self.__dict__.get("backend"), "close", None)  # SMTP keeps connections
        if close is not None:
            close()
        if "engine" in self.__dict__:
            self.engine.dispose()
