"""``mailer subscribers …``: the list, from the operator's side."""

from __future__ import annotations

import csv
import itertools
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

import click
from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn
from rich.table import Table
from sqlalchemy import select

from mailer.cli import Context, console
from mailer.cli.terminal import Format, format_option, print_listing, print_table, printable, shown
from mailer.errors import MailerError
from subscribers import store
from subscribers.importer import import_csv
from subscribers.models import Status, Subscriber
from subscribers.spreadsheet import as_text

EXPORT_COLUMNS = ("email", "name", "status", "tags", "created_at", "confirmed_at", "source")
SHOWN_PROBLEMS = 5  # bad rows shown on the terminal; the errors file has every one
_consent_option = click.option(
    "--consent-source",
    required=True,
    help="Where these people agreed to get the newsletter (a form, an event, an old list).",
)


@click.group()
def subscribers() -> None:
    """Manage subscribers: add, import, export, look up, unsubscribe, erase.

    \b
    Examples:
      mailer subscribers list --status confirmed
      mailer subscribers add ada@example.com --consent-source 'signup sheet'
    """


def _get(ctx: Context, email: str) -> Subscriber:
    with ctx.sessions() as session:
        subscriber = store.find(session, email)
    if subscriber is None:
        raise MailerError(f"{email} is not on the list")
    return subscriber


@subscribers.command()
@click.argument("email")
@click.option("--name", default="")
@click.option("--tag", "tags", multiple=True, help="A tag (repeat for several).")
@_consent_option
@click.option("--consent-text", default="", help="The words they agreed to.")
@click.option("--pending", is_flag=True, help="Send a confirmation email instead of confirming.")
@click.pass_obj
def add(
    ctx: Context,
    email: str,
    name: str,
    tags: tuple[str, ...],
    consent_source: str,
    consent_text: str,
    pending: bool,
) -> None:
    """Add EMAIL (confirmed, unless --pending).

    \b
    Example:
      mailer subscribers add ada@example.com --name Ada --consent-source 'Berlin meetup'
    """
    consent = store.Consent(source=consent_source, text=consent_text)
    status = Status.PENDING if pending else Status.CONFIRMED
    with ctx.sessions.begin() as session:
        result = store.add(session, email, consent, name=name, tags=tags, status=status)
        added = result.subscriber
    if result.outcome == "suppressed":
        raise MailerError(f"{email} is suppressed (unsubscribed, bounced or erased): not added")
    if result.outcome == "exists":
        status_now = added.status if added else "?"
        console.print(f"{shown(email)} is already on the list ({shown(status_now)}).")
        return
    if pending and added is not None:
        ctx.optin.send_confirmation(added)
        console.print(f"Added {shown(email)} (pending); confirmation email sent.")
    else:
        console.print(f"Added {shown(email)} (confirmed).")


@subscribers.command("import")
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False, exists=True))
@_consent_option
@click.option("--consent-text", default="", help="The words they agreed to.")
@click.option("--tag", "tags", multiple=True, help="A tag for every imported subscriber.")
@click.option("--pending", is_flag=True, help="Import as pending rather than confirmed.")
@click.option(
    "--errors",
    "errors_file",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Where every bad row (line, reason) goes, if there is one (FILE.errors.csv).",
)
@click.pass_obj
def import_(
    ctx: Context,
    file: Path,
    consent_source: str,
    consent_text: str,
    tags: tuple[str, ...],
    pending: bool,
    errors_file: Path | None,
) -> None:
    """Import subscribers from a CSV FILE: an export of Mailchimp, Substack, Buttondown or
    listmonk (recognised by its header), or any file with an 'email' column (and 'name',
    'tags'), comma-, semicolon- or tab-separated. Rows the old tool marks as unsubscribed,
    cleaned or blocked are suppressed, never added.

    Example: mailer subscribers import members_export.csv --consent-source "Mailchimp list"
    """
    consent = store.Consent(source=consent_source, text=consent_text)
    status = Status.PENDING if pending else Status.CONFIRMED
    errors_path = errors_file or file.with_name(f"{file.stem}.errors.csv")
    errors_out = _OnFirstWrite(errors_path)
    columns = (BarColumn(), DownloadColumn(), TimeRemainingColumn())
    try:
        with Progress("Importing", *columns, console=console, transient=True) as progress:
            task = progress.add_task("import", total=file.stat().st_size)
            report = import_csv(
                file,
                ctx.sessions,
                consent,
                status=status,
                tags=tags,
                progress=lambda done: progress.update(task, completed=done),
                errors_to=errors_out,
            )
    finally:
        errors_out.close()
    table = Table(title=f"Import of {shown(file)}", show_header=False)
    for label, value in (
        ("rows read", report.rows),
        ("added", report.added),
        ("already on the list", report.existing),
        ("repeated in the file", report.duplicates),
        ("suppressed, not added", report.suppressed),
        ("bad rows, skipped", report.bad),
    ):
        table.add_row(label, f"{value:,}")
    if report.gone:
        table.add_row("left the old tool: suppressed", f"{report.gone:,}")
    if report.taken_off:
        table.add_row("taken off the list by those", f"{report.taken_off:,}")
    console.print(table)
    for line, reason in report.problems[:SHOWN_PROBLEMS]:
        console.print(f"  line {line}: {shown(reason)}")
    if report.bad:
        hidden = report.bad - SHOWN_PROBLEMS
        more = f"… and {hidden:,} more; " if hidden > 0 else ""
        console.print(f"  {more}every bad row is in {shown(errors_path)}")
    console.print(f"Read as {shown(report.mapping)}.")


class _OnFirstWrite:
    """The errors file, created only when there is a bad row to write into it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.file: TextIO | None = None

    def write(self, text: str) -> int:
        if self.file is None:
            try:
                self.file = self.path.open("w", newline="", encoding="utf-8")
            except OSError as exc:
                why = exc.strerror
                raise MailerError(f"{self.path}: cannot write the bad rows ({why})") from exc
        return self.file.write(text)

    def close(self) -> None:
        if self.file is not None:
            self.file.close()


@subscribers.command()
@click.option("--status", type=click.Choice([s.value for s in Status]), help="Only this status.")
@click.option(
    "--out", type=click.Path(path_type=Path, dir_okay=False), help="File (default: stdout)."
)
@click.option(
    "--raw", is_flag=True, help="Every value as stored, formulas too: a dump to import again."
)
@click.pass_obj
def export(ctx: Context, status: str | None, out: Path | None, raw: bool) -> None:
    """Export subscribers as CSV, streamed a page at a time.

    \b
    Example:
      mailer subscribers export --status confirmed --out subscribers.csv

    A value a spreadsheet would run as a formula (it starts with = + - @, a tab or a
    carriage return) gets a leading ' unless --raw. On a terminal, control characters
    are shown escaped.
    """
    target = out.open("w", newline="", encoding="utf-8") if out else sys.stdout
    on_terminal = target.isatty()
    try:
        writer = csv.writer(target)
        writer.writerow(EXPORT_COLUMNS)
        for subscriber in _pages(ctx, status):
            row = [
                subscriber.email,
                subscriber.name,
                subscriber.status,
                ";".join(subscriber.tags),
                subscriber.created_at.isoformat(),
                subscriber.confirmed_at.isoformat() if subscriber.confirmed_at else "",
                subscriber.source,
            ]
            if not raw:
                row = [as_text(cell) for cell in row]
            if on_terminal:
                row = [printable(cell) for cell in row]
            writer.writerow(row)
    finally:
        if out:
            target.close()


def _pages(ctx: Context, status: str | None, page: int = 1000) -> Iterator[Subscriber]:
    last_id = 0
    while True:
        query = (
            select(Subscriber).where(Subscriber.id > last_id).order_by(Subscriber.id).limit(page)
        )
        if status:
            query = query.where(Subscriber.status == status)
        with ctx.sessions() as session:
            rows = list(session.scalars(query))
        if not rows:
            return
        yield from rows
        last_id = rows[-1].id


@subscribers.command("list")
@click.option("--status", type=click.Choice([s.value for s in Status]), help="Only this status.")
@click.option("--limit", default=50, show_default=True)
@format_option
@click.pass_obj
def list_(ctx: Context, status: str | None, limit: int, fmt: Format) -> None:
    """Show subscribers, oldest first (whole addresses, also through a pipe).

    \b
    Examples:
      mailer subscribers list --status pending
      mailer subscribers list --limit 1000 --format csv > some.csv
    """
    subscribers = itertools.islice(_pages(ctx, status, page=min(limit, 1000)), limit)
    rows = ((s.id, s.email, s.name, str(s.status), s.created_at, s.source) for s in subscribers)
    print_listing(console, fmt, ("id", "email", "name", "status", "created (UTC)", "source"), rows)


@subscribers.command()
@click.argument("email")
@click.pass_obj
def show(ctx: Context, email: str) -> None:
    """Everything about one subscriber, with their consent record.

    \b
    Example:
      mailer subscribers show ada@example.com
    """
    with ctx.sessions() as session:
        data = store.gdpr_export(session, email)
    if data["subscriber"] is None and data["suppression"] is None:
        raise MailerError(f"{email} is not on the list")
    table = Table(show_header=False)
    for key, value in (data["subscriber"] or {}).items():
        table.add_row(key, shown(value if value is not None else ""))
    if suppression := data["suppression"]:
        table.add_row("suppressed", shown(f"{suppression['reason']} since {suppression['since']}"))
    print_table(console, table)
    for event in data["activity"][-10:]:
        console.print(shown(f"  {event['at']}  {event['kind']}  {event['detail'] or ''}"))


@subscribers.command()
@click.pass_obj
def count(ctx: Context) -> None:
    """How many subscribers in each status.

    \b
    Example:
      mailer subscribers count
    """
    with ctx.sessions() as session:
        counts = store.count_by_status(session)
    table = Table("status", "subscribers")
    for status, number in counts.items():
        table.add_row(shown(status), f"{number:,}")
    table.add_row("total", f"{sum(counts.values()):,}", style="bold")
    print_table(console, table)


@subscribers.command()
@click.argument("email")
@click.pass_obj
def unsubscribe(ctx: Context, email: str) -> None:
    """Unsubscribe EMAIL for good (it joins the suppression list).

    \b
    Example:
      mailer subscribers unsubscribe ada@example.com
    """
    with ctx.sessions.begin() as session:
        subscriber = store.find(session, email)
        if subscriber is None:
            raise MailerError(f"{email} is not on the list")
        changed = store.unsubscribe(session, subscriber, how="operator")
    console.print(f"{shown(email)} {'unsubscribed' if changed else 'was already off the list'}.")


@subscribers.command()
@click.argument("email")
@click.pass_obj
def remove(ctx: Context, email: str) -> None:
    """Delete EMAIL added by mistake (suppressions stay; use unsubscribe to stop mail).

    \b
    Example:
      mailer subscribers remove ada@example.com
    """
    with ctx.sessions.begin() as session:
        removed = store.remove(session, email)
    if not removed:
        raise MailerError(f"{email} is not on the list")
    console.print(f"Removed {shown(email)}.")


@subscribers.command("gdpr-export")
@click.argument("email")
@click.pass_obj
def gdpr_export(ctx: Context, email: str) -> None:
    """Print everything held about EMAIL as JSON (control characters as \\u escapes).

    \b
    Example:
      mailer subscribers gdpr-export ada@example.com > ada.json
    """
    with ctx.sessions() as session:
        data = store.gdpr_export(session, email)
    text = json.dumps(data, ensure_ascii=False, indent=2)
    # No string in JSON holds a raw line break: those left are the layout, and stay.
    click.echo("\n".join(printable(line) for line in text.split("\n")))


@subscribers.command()
@click.argument("email")
@click.confirmation_option(prompt="Erase every personal detail of this address?")
@click.pass_obj
def erase(ctx: Context, email: str) -> None:
    """Erase EMAIL's personal data; only a hash stays, so it is never imported again.

    \b
    Example:
      mailer subscribers erase ada@example.com
    """
    with ctx.sessions.begin() as session:
        found = store.erase(session, email)
    who = shown(email)
    console.print(
        f"Erased {who}." if found else f"{who} was not on the list; its hash is now suppressed."
    )
