"""The parts a process needs, built once from the settings (and never at import).

This is the only place parts are built: the CLI builds one Runtime per command, a
Celery worker one per process (after the fork), and the web app is handed one
(``mailer.web.create_app``). Each part is built when first asked for, so a command
that never sends opens no backend and one that never reads the store opens no database.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from mailer.config import Settings
from mailer.content.render import Renderer
from mailer.delivery import Backend, make_backend
from mailer.sending.confirmation import ConfirmationMail
from mailer.sending.ratelimit import SendRate, make_bucket
from mailer.store.db import check_schema, make_engine, make_sessions
from mailer.tokens import Signer
from subscribers.optin import OptIn

__all__ = ["Runtime"]


@dataclass
class Runtime:
    settings: Settings

    @cached_property
    def engine(self) -> Engine:
        return make_engine(self.settings.database_url)

    @cached_property
    def sessions(self) -> sessionmaker[Session]:
        """Sessions on a database whose schema is current (else a clear SchemaError)."""
        check_schema(self.engine)
        return make_sessions(self.engine)

    @cached_property
    def backend(self) -> Backend:
        return make_backend(self.settings, self.signer)

    @cached_property
    def signer(self) -> Signer:
        return Signer(self.settings.secret_keys)

    @cached_property
    def renderer(self) -> Renderer:
        """Templates, theme and Markdown parser: costly to load, so loaded once."""
        return Renderer(self.settings)

    @cached_property
    def optin(self) -> OptIn:
        """Subscribe, confirm, unsubscribe; its confirmation email goes through ``backend``."""
        mail = ConfirmationMail(self.settings, self.renderer, self.backend)
        return OptIn(self.settings, self.sessions, self.signer, mail)

    @cached_property
    def send_rate(self) -> SendRate:
        s = self.settings
        return make_bucket(s.send_rate, s.backend, s.batch_size, s.broker_url)

    def close(self) -> None:
        """Close the database connections this runtime opened."""
        if "engine" in self.__dict__:
            self.engine.dispose()
