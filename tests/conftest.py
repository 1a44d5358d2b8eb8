"""Shared fixtures: settings isolated from the developer's environment, and the sample post."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mailer.config import Settings, load_settings
from mailer.render import Renderer

ROOT = Path(__file__).resolve().parent.parent
SAMPLE_POST = ROOT.parent / "shared" / "posts" / "2026-02-06-ai-weekly.md"


@pytest.fixture(autouse=True)
def isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No MAILER_* variable or mailer.toml of the developer's leaks into a test."""
    for name in list(os.environ):
        if name.startswith("MAILER_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def settings() -> Settings:
    return load_settings(site_url="https://blog.example.org", public_url="https://mail.example.org")


@pytest.fixture
def renderer(settings: Settings) -> Renderer:
    return Renderer(settings)


@pytest.fixture
def write_post(tmp_path: Path):
    """Write a post file into the test's folder and return its path."""

    def write(text: str | bytes, name: str = "post.md") -> Path:
        path = tmp_path / name
        if isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(text, "utf-8")
        return path

    return write
