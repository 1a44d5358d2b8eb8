"""Every command's --help says what it does and shows it run: the first hour's manual."""

from __future__ import annotations

from collections.abc import Iterator

import click
import pytest
from click.testing import CliRunner

from mailer.cli import main


def commands(group: click.Group, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """The path of every command and group under ``group`` (imported as they run)."""
    ctx = click.Context(group)
    for name in group.list_commands(ctx):
        yield (*path, name)
        command = group.get_command(ctx, name)
        if isinstance(command, click.Group):
            yield from commands(command, (*path, name))


@pytest.mark.parametrize("path", list(commands(main)), ids=" ".join)
def test_help_says_what_the_command_does_with_an_example(path: tuple[str, ...]) -> None:
    result = CliRunner().invoke(main, [*path, "--help"], env={"COLUMNS": "100"})
    assert result.exit_code == 0, result.output
    description = result.output.split("\n\n")[1]
    assert description.strip() and not description.lstrip().startswith("Options:")
    said = " ".join(result.output.split())
    assert "Example" in said and f"mailer {' '.join(path)}" in said.split("Example", 1)[1]
