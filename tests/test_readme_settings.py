"""The README's settings table and mailer.toml example cannot fall behind the Settings."""

from __future__ import annotations

import re
from pathlib import Path

from mailer.config import Settings, load_settings

README = Path(__file__).resolve().parents[1] / "README.md"


def section() -> str:
    text = README.read_text("utf-8")
    start = text.index("\n## Configuration\n")
    return text[start : text.index("\n## ", start + 1)]


def test_every_setting_has_a_row_in_the_readme_table() -> None:
    rows = [line for line in section().splitlines() if line.startswith("| `MAILER_")]
    named = {name for row in rows for name in re.findall(r"`(MAILER_[A-Z0-9_]+)`", row)}
    fields = {f"MAILER_{name.upper()}" for name in Settings.model_fields}
    assert fields - named == set(), "settings missing from README.md's table"
    assert named - fields == set(), "README.md's table names settings that do not exist"


def test_the_mailer_toml_example_is_read_as_written(tmp_path: Path) -> None:
    (example,) = re.findall(r"```toml\n(.*?)```", section(), re.S)
    (tmp_path / "mailer.toml").write_text(example, "utf-8")
    settings = load_settings()
    assert settings.batch_size == 500 and settings.smtp_security == "ssl"
    assert len(settings.seed_list) == 2
