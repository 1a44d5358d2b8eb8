"""``mailer db``: the database schema."""

from __future__ import annotations

import click

from mailer.cli import Context, console
from mailer.store.db import upgrade as apply_migrations


@click.group()
def db() -> None:
    """The database schema (Alembic migrations).

    \b
    Example:
      mailer db upgrade
    """


@db.command()
@click.pass_obj
def upgrade(ctx: Context) -> None:
    """Apply every migration this version has (safe to run again).

    \b
    Example:
      MAILER_DATABASE_URL=postgres://mailer@db/mailer mailer db upgrade
    """
    apply_migrations(ctx.engine)
    console.print(f"Database {ctx.engine.url.render_as_string()} is up to date.")
