"""``mailer bounces fetch | ingest``: read what came back (bounces, complaints) into the store."""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import click
from rich.progress import Progress

from mailer.bounces.fetch import fetch_bounces, message_handler
from mailer.cli import Context, console
from mailer.cli.terminal import shown
from mailer.errors import MailerError

# A message larger than this is no bounce worth reading (a returned copy is cut short).
MAX_MESSAGE = 10 * 1024 * 1024


@click.group()
def bounces() -> None:
    """Bounces and complaints from the bounce mailbox (for the SMTP backend).

    \b
    Example:
      mailer bounces fetch
    """


@bounces.command()
@click.pass_obj
def fetch(ctx: Context) -> None:
    """Read the bounce mailbox (MAILER_BOUNCE_IMAP_*) and file each message away.

    \b
    Example:
      mailer bounces fetch
    """
    with Progress(console=console, transient=True) as bar:
        task = bar.add_task("Reading the bounce mailbox", total=None)
        outcomes = fetch_bounces(
            ctx, lambda done, total: bar.update(task, completed=done, total=total)
        )
    where = shown(ctx.settings.bounce_imap_host)
    _summary(Counter(outcomes), f"{len(outcomes):,} messages read from {where}")


@bounces.command()
@click.argument("source", type=click.Path(dir_okay=False, allow_dash=True, path_type=Path))
@click.pass_obj
def ingest(ctx: Context, source: Path) -> None:
    """Read one message from SOURCE (a file, or - for standard input), e.g. from a pipe.

    \b
    Example:
      mailer bounces ingest - < bounce.eml
    """
    if str(source) == "-":
        data = sys.stdin.buffer.read(MAX_MESSAGE + 1)
    else:
        try:
            with source.open("rb") as file:
                data = file.read(MAX_MESSAGE + 1)
        except OSError as exc:
            raise MailerError(f"{source}: {exc.strerror}") from exc
    if len(data) > MAX_MESSAGE:
        raise MailerError(f"{source}: larger than {MAX_MESSAGE // 1024 // 1024} MB, not a bounce")
    outcome = message_handler(ctx)(data)
    _summary(Counter([outcome]), f"{shown(str(source))}: {outcome}")
    if outcome == "unparseable":
        sys.exit(1)


def _summary(counts: Counter[str], headline: str) -> None:
    console.print(headline)
    console.print(
        f"{counts['hard']:,} hard bounces (suppressed), {counts['soft']:,} soft (counted), "
        f"{counts['complaint']:,} complaints (suppressed), {counts['block']:,} refused by "
        f"policy, {counts['delayed'] + counts['delivered']:,} delay or delivery notices, "
        f"{counts['unmatched']:,} unmatched, {counts['unparseable']:,} unparseable, "
        f"{counts['duplicate']:,} read before"
    )
