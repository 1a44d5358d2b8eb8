"""A weekly post as its author wrote it: Markdown with optional YAML front matter.

Loading is strict about what would otherwise surface on Friday as a broken send:
bytes that are not UTF-8, malformed YAML, an empty body, no title. Each is one
``PostError`` naming the file and, where there is one, the line.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import frontmatter
import yaml

from mailer.errors import PostError
from mailer.language import is_language_tag

__all__ = ["Post", "load_post"]

_SLUG = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")
_FIRST_H1 = re.compile(r"\A\s*#[ \t]+(?P<title>.+?)[ \t#]*$", re.MULTILINE)


@dataclass(frozen=True)
class Post:
    """One post: its front matter, normalised, and its Markdown body."""

    path: Path
    slug: str
    title: str
    body: str
    # Line in the file where the body starts, so findings can point into the file.
    body_line: int = 1
    date: dt.date | None = None
    scheduled: dt.datetime | dt.date | None = None
    subject: str | None = None
    preheader: str | None = None
    tags: tuple[str, ...] = field(default=())
    lang: str | None = None
    canonical_url: str | None = None


def load_post(path: Path | str) -> Post:
    """Load and check one post file."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise PostError(path, f"cannot read the file ({exc.strerror})") from exc
    text = _decode(path, raw)
    meta, body = _split(path, text)

    title = _text_field(path, meta, "title")
    if not title:
        heading = _FIRST_H1.match(body)
        if heading:
            title = heading["title"].strip()
            body = body[heading.end() :]
    body = body.strip()
    if not body:
        raise PostError(path, "the post has no body: write the newsletter below the front matter")
    if not title:
        raise PostError(
            path, "the post has no title: add 'title:' to the front matter or start with '# Title'"
        )
    slug = _text_field(path, meta, "slug") or path.stem
    if not _SLUG.fullmatch(slug):
        raise PostError(
            path,
            f"the slug {slug!r} (from the file name when front matter has no 'slug:') must be "
            "ASCII letters, digits, '.', '_' or '-': it names the post in URLs and at SendGrid",
        )
    return Post(
        path=path,
        slug=slug,
        title=title,
        body=body,
        body_line=text[: text.find(body)].count("\n") + 1 if body in text else 1,
        date=_date_field(path, meta, "date"),
        scheduled=_date_field(path, meta, "scheduled", with_time=True),
        subject=_text_field(path, meta, "subject"),
        preheader=_text_field(path, meta, "preheader") or _text_field(path, meta, "description"),
        tags=_tags(path, meta),
        lang=_lang(path, meta),
        canonical_url=_text_field(path, meta, "canonical_url") or _text_field(path, meta, "url"),
    )


def _split(path: Path, text: str) -> tuple[dict[str, Any], str]:
    """Front matter and body; a post without front matter is all body."""
    handler = frontmatter.YAMLHandler()
    stripped = text.strip()
    if not handler.detect(stripped):
        return {}, text
    front, body = handler.split(stripped)
    try:
        meta = handler.load(front) or {}
    except yaml.YAMLError as exc:
        raise PostError(path, _yaml_problem(exc), _yaml_line(text, exc)) from exc
    if not isinstance(meta, dict):
        raise PostError(path, "the front matter must be a mapping of keys to values", 2)
    return meta, body


def _decode(path: Path, raw: bytes) -> str:
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise PostError(
            path, f"not UTF-8 text (byte 0x{raw[exc.start]:02x}): save the file as UTF-8", line
        ) from exc


def _yaml_problem(exc: yaml.YAMLError) -> str:
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    context = getattr(exc, "context", None)
    return f"malformed YAML front matter: {problem}" + (f" ({context})" if context else "")


def _yaml_line(text: str, exc: yaml.YAMLError) -> int | None:
    """Turn the YAML parser's position (inside the front matter) into a line of the file."""
    # Where the broken construct starts (an unclosed bracket, say), else where it broke.
    mark = getattr(exc, "context_mark", None) or getattr(exc, "problem_mark", None)
    if mark is None:
        return None
    # The text is stripped, then YAML gets what follows the opening '---'.
    leading_lines = len(text) - len(text.lstrip())
    leading_lines = text[:leading_lines].count("\n")
    return leading_lines + mark.line + 1


def _text_field(path: Path, meta: dict[str, Any], key: str) -> str | None:
    value = meta.get(key)
    if value is None:
        return None
    if isinstance(value, (dict, list)):
        raise PostError(path, f"front matter '{key}' must be text, not a {type(value).__name__}")
    return str(value).strip() or None


def _date_field(
    path: Path, meta: dict[str, Any], key: str, *, with_time: bool = False
) -> dt.date | dt.datetime | None:
    value = meta.get(key)
    if value is None or isinstance(value, dt.date):  # YAML already parsed it (datetime too)
        return value
    try:
        parsed = dt.datetime.fromisoformat(str(value).strip())
    except ValueError as exc:
        raise PostError(
            path, f"front matter '{key}' is not a date: {value!r} (use YYYY-MM-DD)"
        ) from exc
    if with_time and (parsed.hour, parsed.minute, parsed.second) != (0, 0, 0):
        return parsed
    return parsed.date()


def _lang(path: Path, meta: dict[str, Any]) -> str | None:
    lang = _text_field(path, meta, "lang")
    if lang is not None and not is_language_tag(lang):
        raise PostError(
            path, f"front matter 'lang' must be a language tag such as en or zh-CN, not {lang!r}"
        )
    return lang


def _tags(path: Path, meta: dict[str, Any]) -> tuple[str, ...]:
    value = meta.get("tags")
    if value is None:
        return ()
    if isinstance(value, str):
        return tuple(tag.strip() for tag in value.split(",") if tag.strip())
    if isinstance(value, list) and all(isinstance(tag, (str, int)) for tag in value):
        return tuple(str(tag) for tag in value)
    raise PostError(path, "front matter 'tags' must be a list of words")
