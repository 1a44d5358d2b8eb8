"""The parts a process needs to send, built once from the settings (and never at import).

The CLI builds one per command, a Celery worker one per process (after the fork),
the web app one per app.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from sqlalchemy import Engine
from sqlalchemy.orm import sessionmaker

from mailer.config import Settings
from mailer.delivery import Backend, make_backend
from mailer.sending.ratelimit import SendRate, make_bucket
from mailer.store.db import check_schema, make_engine, make_sessions
from mailer.tokens import Signer

__all__ = ["Runtime"]


@dataclass
class Runtime:
    settings: Settings

    @cached_property
    def engine(self) -> Engine:
        return make_engine(self.settings.database_url)

    @cached_property
    def sessions(self) -> sessionmaker:
        """Sessions on a database whose schema is current (else a clear SchemaError)."""
        check_schema(self.engine)
        return make_sessions(self.engine)

    @cached_property
    def backend(self) -> Backend:
        return make_backend(self.settings)

    @cached_property
    def signer(self) -> Signer:
        return Signer(self.settings.secret_keys)

    def close(self) -> None:
        """Close the database connections this runtime opened."""
        if "engine" in self.__dict__:
            self.engine.dispose()

    @cached_property
    def send_rate(self) -> SendRate:
        s = self.settings
        return make_bucket(s.send_rate, s.backend, s.batch_size, s.broker_url)
