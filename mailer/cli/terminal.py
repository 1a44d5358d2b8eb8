"""Text from outside, made safe to print: a reader's name, a provider's error, a subject.

Control characters and bidi overrides become visible escapes (``mailer.printable``), and
rich reads ``[brackets]`` as markup. Names in the database may predate the checks at the
door, so the CLI cleans what it prints, not what it stores. Listings go out in one of
three forms (``print_listing``), each made safe for where it lands.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import sys
from collections.abc import Iterable, Sequence
from typing import Literal, Protocol

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from mailer.printable import printable
from subscribers.spreadsheet import as_text

__all__ = [
    "Format",
    "finding_text",
    "format_option",
    "plural",
    "print_listing",
    "print_table",
    "printable",
    "shown",
]

Format = Literal["table", "csv", "json"]
# A pipe gets the whole table, however wide; past this it is a runaway, not a listing.
MAX_PIPE_WIDTH = 10_000

format_option = click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "csv", "json"]),
    default="table",
    show_default=True,
    help="table for people; csv (formulas neutralised) or json for other programs.",
)


def shown(value: object) -> str:
    """``printable(value)`` escaped for rich markup: for ``console.print`` and table cells."""
    return escape(printable(value))


def plural(count: int, word: str) -> str:
    """``1 batch``, ``3 batches``, ``1,200 readers``: English plurals of the CLI's nouns."""
    many = word + ("es" if word.endswith(("s", "sh", "ch", "x")) else "s")
    return f"{count:,} {word if count == 1 else many}"


class Reported(Protocol):
    """A lint finding, or a group of findings of one kind: its ``str`` starts with its
    severity."""

    @property
    def severity(self) -> str: ...


def finding_text(finding: Reported) -> Text:
    """One lint finding (or group) as a line: its severity in colour, once, then the rest."""
    color = "red" if finding.severity == "error" else "yellow"
    rest = str(finding).removeprefix(finding.severity)
    return Text.assemble((finding.severity, color), printable(rest))


def print_table(console: Console, table: Table) -> None:
    """Print ``table``; to a pipe or a file at its full width, so that no address is cut
    to the 80 columns rich assumes when there is no terminal to ask."""
    if console.is_terminal:
        console.print(table)
        return
    width = console.measure(table, options=console.options.update_width(MAX_PIPE_WIDTH)).maximum
    # A console of its own: ``console.print(width=…)`` cannot go past the console's width.
    piped = Console(file=console.file, width=max(width, 1), highlight=False, emoji=False)
    piped.print(table)


def print_listing(
    console: Console,
    fmt: Format,
    columns: Sequence[str],
    rows: Iterable[Sequence[object]],
    *,
    caption: str | None = None,
) -> None:
    """Rows of plain values (text, numbers, times, None) as a table, CSV or JSON.

    In a table, integers get thousands separators and floats are shares (``12.5%``); CSV
    cells are neutralised for spreadsheets; JSON is ASCII, so no control character or
    bidi override reaches a terminal and nothing is lost.
    """
    if fmt == "json":
        records = [dict(zip(columns, map(_plain, row), strict=True)) for row in rows]
        click.echo(json.dumps(records, ensure_ascii=True, indent=2))
    elif fmt == "csv":
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(columns)
        for row in rows:
            writer.writerow(as_text(_csv_cell(value)) for value in row)
    else:
        table = Table(*columns, caption=caption)
        for row in rows:
            table.add_row(*(_table_cell(value) for value in row))
        print_table(console, table)


def _plain(value: object) -> object:
    return value.isoformat() if isinstance(value, dt.datetime) else value


def _csv_cell(value: object) -> str:
    return "" if value is None else str(_plain(value))


def _table_cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.1%}"
    if isinstance(value, dt.datetime):
        return f"{value:%Y-%m-%d %H:%M}"
    return shown(value)
