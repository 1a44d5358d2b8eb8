"""Templates, theme and strings, looked up in the operator's folder before the built-in one.

One Jinja2 environment serves the email, the plain-text part and (later) the web
pages; autoescape is on for everything but ``.txt`` templates.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import jinja2

from mailer.content.spacing import Spaced
from mailer.errors import TemplateError
from mailer.langtag import is_language_tag

__all__ = ["BUILTIN_TEMPLATES", "Templates"]

BUILTIN_TEMPLATES = Path(__file__).resolve().parents[2] / "templates"


def _autoescape(name: str | None) -> bool:
    return not (name or "").endswith(".txt")


class Templates:
    """The template search path and what is read from it."""

    def __init__(self, override_dir: Path | None = None) -> None:
        if override_dir is not None and not override_dir.is_dir():
            raise TemplateError(
                f"MAILER_TEMPLATES_DIR={override_dir}: no such folder; create it or unset it"
            )
        self.search_path = [p for p in (override_dir, BUILTIN_TEMPLATES) if p is not None]
        self.env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(self.search_path),
            autoescape=_autoescape,
            undefined=jinja2.StrictUndefined,
            keep_trailing_newline=True,
        )
        self._strings: dict[str, dict[str, str]] = {}

    def get(self, name: str) -> jinja2.Template:
        try:
            return self.env.get_template(name)
        except jinja2.TemplateSyntaxError as exc:
            raise TemplateError(f"{exc.filename}:{exc.lineno}: {exc.message}") from exc
        except jinja2.TemplateNotFound as exc:
            raise TemplateError(f"template {name} not found in {self._where()}") from exc

    def render(self, name: str, /, **context: Any) -> str:
        template = self.get(name)
        try:
            return template.render(**context)
        except jinja2.UndefinedError as exc:
            raise TemplateError(f"{template.filename}: {exc.message}") from exc

    def theme(self) -> dict[str, Any]:
        """``email/theme.toml``: colours, fonts and inline styles of the email."""
        theme = self._toml("email/theme.toml")
        if theme is None:
            raise TemplateError(f"email/theme.toml not found in {self._where()}")
        return theme

    def strings(self, lang: str) -> dict[str, str]:
        """The words around a post, for ``lang`` (``zh-TW``, then ``zh``), English filling gaps."""
        if lang not in self._strings:
            strings = dict(self._toml("strings/en.toml") or {})
            names = (lang.split("-")[0], lang) if is_language_tag(lang) else ()
            for name in dict.fromkeys(names):
                strings.update(self._toml(f"strings/{name}.toml") or {})
            # Spaced: "订阅了 The Weekly" where a Latin name meets CJK text (spacing.py).
            self._strings[lang] = {
                k: Spaced(v) if isinstance(v, str) else v for k, v in strings.items()
            }
        return self._strings[lang]

    def _toml(self, name: str) -> dict[str, Any] | None:
        for folder in self.search_path:
            path = folder / name
            if path.is_file():
                try:
                    return tomllib.loads(path.read_text("utf-8"))
                except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
                    raise TemplateError(f"{path}: {exc}") from exc
        return None

    def _where(self) -> str:
        return ", ".join(str(p) for p in self.search_path)
