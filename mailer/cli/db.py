"""``mailer db``: the database schema."""

from __future__ import annotations

import click

from mailer.cli import Context, console
from mailer.store.db import upgrade as apply_migrations


@click.group()
def db() -> None:
    """The database schema (Alembic migrations)."""


@db.command()
@click.pass_obj
def upgrade(ctx: Context) -> None:
    """Apply every migration this version has (safe to run again)."""
    apply_migrations(ctx.engine)
    console.print(f"Database {ctx.engine.url.render_as_string()} is up to date.")
