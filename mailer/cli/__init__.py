"""The ``mailer`` command. Wiring lives here: settings are read once and handed down.

Every ``MailerError`` ends the command with one line on stderr and exit status 2;
a traceback means a bug, not a bad input.
"""

from __future__ import annotations

import sys
from functools import cached_property

import click
from rich.console import Console
from sqlalchemy import Engine
from sqlalchemy.orm import sessionmaker

from mailer.config import Settings, load_settings
from mailer.db import check_schema, make_engine, make_sessions
from mailer.errors import MailerError

__all__ = ["Context", "console", "main"]

console = Console(highlight=False)


class Context:
    """What commands share: the settings, and the database once a command asks for it."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @cached_property
    def engine(self) -> Engine:
        return make_engine(self.settings.database_url)

    @cached_property
    def sessions(self) -> sessionmaker:
        """Sessions on a database whose schema is current (else a clear SchemaError)."""
        check_schema(self.engine)
        return make_sessions(self.engine)


class _Group(click.Group):
    """Turns the project's own errors into one clear line and exit status 2."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except MailerError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)


@click.group(cls=_Group)
@click.pass_context
def main(ctx: click.Context) -> None:
    """Newsletter delivery: render a weekly Markdown post and send it to every subscriber."""
    ctx.obj = Context(load_settings())


def _register() -> None:
    from mailer.cli import db, preview, serve, subscribers

    main.add_command(preview.preview)
    main.add_command(db.db)
    main.add_command(serve.serve)
    main.add_command(subscribers.subscribers)


_register()
