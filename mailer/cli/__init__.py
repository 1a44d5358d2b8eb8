"""The ``mailer`` command. Wiring lives here: settings are read once and handed down.

Every ``MailerError`` ends the command with one line on stderr and exit status 2;
a traceback means a bug, not a bad input.
"""

from __future__ import annotations

import logging
import sys

import click
from rich.console import Console

from mailer import logs
from mailer.cli.terminal import printable
from mailer.config import load_settings
from mailer.errors import MailerError
from mailer.metrics import use_dir
from mailer.runtime import Runtime

__all__ = ["Context", "console", "main"]

# Neither highlighting nor :emoji: codes: what the CLI prints is often from outside.
console = Console(highlight=False, emoji=False)
# Commands that run until stopped, logging what they serve.
_SERVERS = frozenset({"serve", "metrics"})


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
    settings = load_settings()
    # A person at a terminal gets warnings (the command says the rest); servers and log
    # shippers get every record.
    shipped = settings.log_format == "json" or ctx.invoked_subcommand in _SERVERS
    logs.configure(settings.log_format, logging.INFO if shipped else logging.WARNING)
    if not shipped:  # the command prints the send's outcome (a pause, a retry) itself
        logging.getLogger("mailer.sending").setLevel(logging.ERROR)
    use_dir(settings.metrics_dir)
    ctx.obj = Context(settings)
    ctx.call_on_close(ctx.obj.close)


def _register() -> None:
    from mailer.cli import campaigns, db, demo, preview, secret, send, serve, stats, subscribers
    from mailer.cli.bounces import bounces
    from mailer.cli.dns import dns
    from mailer.cli.metrics import metrics

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
        bounces,
        dns,
        metrics,
    ):
        main.add_command(command)


_register()
