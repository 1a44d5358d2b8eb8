"""The database: one SQLAlchemy engine per process, the declarative base, and the schema check.

SQLite (a file, in WAL mode) is the embedded default; PostgreSQL runs the same code
through ``MAILER_DATABASE_URL``. The schema is Alembic's (``mailer/store/migrations``);
every command but ``mailer db upgrade`` refuses to run on a database that is behind.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any, ClassVar

from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import DateTime, Engine, MetaData, Table, create_engine
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.orm import DeclarativeBase, sessionmaker
from sqlalchemy.types import TypeDecorator

from mailer.errors import ConfigError, SchemaError
from mailer.store import dialect

__all__ = ["Base", "Id", "UTCDateTime", "check_schema", "make_engine", "make_sessions", "upgrade"]

MIGRATIONS = Path(__file__).resolve().parent / "migrations"

# Constraint names that are the same on SQLite and PostgreSQL, so migrations can name them.
_NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# 64-bit ids on PostgreSQL; SQLite only auto-numbers a plain INTEGER primary key.
Id = dialect.BIG_ROWID


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=_NAMING)
    # Every model here is mapped to a Table (SQLAlchemy allows any FromClause), so its
    # __table__ takes the Core statements that want one: insert(), update(), COPY.
    __table__: ClassVar[Table]


class UTCDateTime(TypeDecorator[dt.datetime]):
    """Aware UTC datetimes in and out, on SQLite too (which stores them without a zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime: use datetime.now(UTC)")
        return value.astimezone(dt.UTC) if value is not None else None

    def process_result_value(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def make_engine(url: str) -> Engine:
    """An engine for ``url``; SQLite gets WAL, foreign keys and a busy timeout."""
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise ConfigError(f"MAILER_DATABASE_URL: not a database URL: {url!r}") from exc
    try:
        engine = create_engine(dialect.engine_url(parsed), pool_pre_ping=True)
    except Exception as exc:  # a driver that is not installed, a bad option
        raise ConfigError(f"MAILER_DATABASE_URL: {exc}") from exc
    dialect.configure(engine)
    return engine


def make_sessions(engine: Engine) -> sessionmaker:
    return sessionmaker(engine, expire_on_commit=False)


def _alembic_config(engine: Engine) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["engine"] = engine
    return config


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Apply migrations up to ``revision``."""
    from alembic import command

    command.upgrade(_alembic_config(engine), revision)


def check_schema(engine: Engine) -> None:
    """Raise ``SchemaError`` unless the database is at the code's newest migration."""
    head = ScriptDirectory.from_config(_alembic_config(engine)).get_current_head()
    try:
        with engine.connect() as connection:
            current = MigrationContext.configure(connection).get_current_revision()
    except Exception as exc:
        raise SchemaError(
            f"cannot open the database {engine.url.render_as_string()}: {exc.__class__.__name__}: "
            f"{str(exc).splitlines()[0]}"
        ) from exc
    if current != head:
        state = "has no schema yet" if current is None else f"is at revision {current}"
        raise SchemaError(
            f"the database {state}; this version needs {head}: run `mailer db upgrade`"
        )
