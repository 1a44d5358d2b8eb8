"""``mailer --help`` lists the commands without importing them; a command imports its own."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys

from click.testing import CliRunner

from mailer.cli import COMMANDS, main

# What listing the commands must not load: each costs a tenth of a second or more.
HEAVY = ("alembic", "celery", "fastapi", "psycopg", "py3langid", "pydantic", "sqlalchemy")
LOADED = (
    "import json, sys\n"
    "from mailer.cli import main\n"
    "try:\n"
    "    main(sys.argv[1:])\n"
    "except SystemExit:\n"
    "    pass\n"
    "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})), file=sys.stderr)\n"
)


def test_help_lists_every_command_and_imports_none() -> None:
    answer = subprocess.run(
        [sys.executable, "-c", LOADED, "--help"], capture_output=True, text=True, check=True
    )
    listed = answer.stdout.split("Commands:")[1].split()
    assert set(COMMANDS) <= set(listed)
    loaded = json.loads(answer.stderr)
    assert [name for name in HEAVY if name in loaded] == []


def test_the_listing_says_what_each_command_says_of_itself() -> None:
    for name, (where, first_sentence) in COMMANDS.items():
        module, _, attribute = where.partition(":")
        command = getattr(importlib.import_module(module), attribute)
        assert (command.name, command.get_short_help_str(1000)) == (name, first_sentence)


def test_a_command_runs_once_asked_for() -> None:
    result = CliRunner().invoke(main, ["secret", "--help"])
    assert result.exit_code == 0 and "MAILER_SECRET_KEYS" in result.output
