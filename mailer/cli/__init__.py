"""The ``mailer`` command. Wiring lives here: settings are read once and handed down.

Every ``MailerError`` ends the command with one line on stderr and exit status 2;
a traceback means a bug, not a bad input.

Nothing heavy is imported here: ``mailer --help`` lists the commands from ``COMMANDS``
without importing them, and a command's module (with what it needs: the store, the
web app, the backends) is imported only when that command runs.
"""

from __future__ import annotations

import importlib
import logging
import sys
from typing import TYPE_CHECKING, Any

import click
from rich.console import Console

from mailer.errors import MailerError

if TYPE_CHECKING:
    from mailer.cli.context import Context

__all__ = ["COMMANDS", "Context", "console", "main"]

# Neither highlighting nor :emoji: codes: what the CLI prints is often from outside.
console = Console(highlight=False, emoji=False)
# Commands that run until stopped, logging what they serve.
_SERVERS = frozenset({"serve", "metrics"})
# Each command: where it is ("module:attribute"), and its help's first sentence for the
# listing (tests/cli/test_lazy.py checks that it is the command's own).
COMMANDS = {
    "bounces": (
        "mailer.cli.bounces:bounces",
        "Bounces and complaints from the bounce mailbox (for the SMTP backend).",
    ),
    "campaigns": (
        "mailer.cli.campaigns:campaigns",
        "List, inspect, pause, resume and cancel campaigns.",
    ),
    "db": ("mailer.cli.db:db", "The database schema (Alembic migrations)."),
    "demo": (
        "mailer.cli.demo:demo",
        "Send POST (the sample by default) to a few demo subscribers, into the outbox.",
    ),
    "dns": (
        "mailer.cli.dns:dns",
        "Print the DNS records that let receivers trust this sender (SPF, DKIM, DMARC, MX).",
    ),
    "metrics": ("mailer.cli.metrics:metrics", "Prometheus metrics without the web app."),
    "preview": (
        "mailer.cli.preview:preview",
        "Render POST as readers will get it, write it out and report what would hurt them.",
    ),
    "secret": ("mailer.cli.secret:secret", "Print a new random secret for MAILER_SECRET_KEYS."),
    "send": (
        "mailer.cli.send:send",
        "Send POST to every confirmed subscriber (each exactly once, whatever fails).",
    ),
    "serve": ("mailer.cli.serve:serve", "Serve the web app with uvicorn."),
    "stats": (
        "mailer.cli.stats:stats",
        "Numbers for CAMPAIGN (default: the latest campaigns, one line each).",
    ),
    "subscribers": (
        "mailer.cli.subscribers:subscribers",
        "Manage subscribers: add, import, export, look up, unsubscribe, erase.",
    ),
}


def __getattr__(name: str) -> Any:
    """``Context`` on first use: the commands import it from here, and it is a ``Runtime``
    (SQLAlchemy and the backends), which ``mailer --help`` must not load."""
    if name == "Context":
        from mailer.cli.context import Context

        return Context
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class _Group(click.Group):
    """Imports a command's module only when it runs; turns the project's own errors into
    one clear line and exit status 2."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*COMMANDS, *self.commands})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in self.commands and name in COMMANDS:
            module, _, attribute = COMMANDS[name][0].partition(":")
            self.add_command(getattr(importlib.import_module(module), attribute), name)
        return self.commands.get(name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """As click lists them, but from ``COMMANDS`` for those not imported yet."""
        names = self.list_commands(ctx)
        limit = formatter.width - 6 - max(len(name) for name in names)
        rows = []
        for name in names:
            if name in self.commands:
                command = self.commands[name]
                if not command.hidden:
                    rows.append((name, command.get_short_help_str(limit)))
            else:
                stand_in = click.Command(name, help=COMMANDS[name][1])
                rows.append((name, stand_in.get_short_help_str(limit)))
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except MailerError as exc:
            from mailer.printable import printable

            click.echo(f"error: {printable(str(exc))}", err=True)
            sys.exit(2)


@click.group(cls=_Group)
@click.version_option(package_name="mailer", prog_name="mailer", message="%(prog)s %(version)s")
@click.pass_context
def main(ctx: click.Context) -> None:
    """Newsletter delivery: render a weekly Markdown post and send it to every subscriber."""
    from mailer import logs
    from mailer.cli.context import Context
    from mailer.config import load_settings

    settings = load_settings()
    # A person at a terminal gets warnings (the command says the rest); servers and log
    # shippers get every record.
    shipped = settings.log_format == "json" or ctx.invoked_subcommand in _SERVERS
    logs.configure(settings.log_format, logging.INFO if shipped else logging.WARNING)
    if not shipped:  # the command prints the send's outcome (a pause, a retry) itself
        logging.getLogger("mailer.sending").setLevel(logging.ERROR)
    if settings.metrics_dir is not None:  # prometheus-client only where metrics are shared
        from mailer.metrics import use_dir

        use_dir(settings.metrics_dir)
    ctx.obj = Context(settings)
    ctx.call_on_close(ctx.obj.close)
