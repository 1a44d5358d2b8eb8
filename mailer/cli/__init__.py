"""The ``mailer`` command. Wiring lives here: settings are read once and handed down.

Every ``MailerError`` ends the command with one line on stderr and exit status 2;
a traceback means a bug, not a bad input.
"""

from __future__ import annotations

import sys

import click
from rich.console import Console

from mailer.cli.terminal import printable
from mailer.config import load_settings
from mailer.errors import MailerError
from mailer.runtime import Runtime

__all__ = ["Context", "console", "main"]

# Neither highlighting nor :emoji: codes: what the CLI prints is often from outside.
console = Console(highlight=False, emoji=False)


class Context(Runtime):
    """What commands share: the settings, and the database and backend once asked for."""


class _Group(click.Group):
    """Turns the project's own errors into one clear line and exit status 2."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except MailerError as exc:
            click.echo(f"error: {printable(str(exc))}", err=True)
            sys.exit(2)


@click.group(cls=_Group)
@click.version_option(package_name="mailer", prog_name="mailer", message="%(prog)s %(version)s")
@click.pass_context
def main(ctx: click.Context) -> None:
    """Newsletter delivery: render a weekly Markdown post and send it to every subscriber."""
    ctx.obj = Context(load_settings())
    ctx.call_on_close(ctx.obj.close)


def _register() -> None:
    from mailer.cli import campaigns, db, demo, preview, secret, send, serve, stats, subscribers

    for command in (
        demo.demo,
        preview.preview,
        send.send,
        campaigns.campaigns,
        stats.stats,
        subscribers.subscribers,
        serve.serve,
        db.db,
        secret.secret,
    ):
        main.add_command(command)


_register()
