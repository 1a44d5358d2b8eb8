"""A weekly post as its author wrote it: Markdown with optional front matter.

Loading is strict about what would otherwise surface on Friday as a broken send:
bytes that are not UTF-8, malformed front matter, an empty body, no title. Each is one
``PostError`` naming the file and, where there is one, the line. Front matter may be
written as any common site generator writes it (see ``mailer.content.frontmatter``).
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mailer.content.frontmatter import FrontMatter, read_front_matter
from mailer.errors import PostError
from mailer.langtag import is_language_tag

__all__ = ["Post", "load_post"]

_SLUG = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")
_H1 = re.compile(r" {0,3}#[ \t]+(?P<title>.+?)(?:[ \t]+#+)?[ \t]*")
_SECTION = re.compile(r" {0,3}#{2,6}(?:[ \t]|$)")
_FENCE = re.compile(r" {0,3}(?P<fence>`{3,}|~{3,})")
# C0 controls but tab and newline, DEL, C1: no email shows them and MJML rejects some.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_DATE = re.compile(r"(?P<y>\d{4})[-/](?P<m>\d{1,2})[-/](?P<d>\d{1,2})(?P<time>(?:[ T].*)?)")


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
    # Lines of the file where invisible control characters were removed, for the linter.
    control_lines: tuple[int, ...] = field(default=())


def load_post(path: Path | str) -> Post:
    """Load and check one post file."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise PostError(path, f"cannot read the file ({exc.strerror})") from exc
    text = _decode(path, raw).replace("\r\n", "\n").replace("\r", "\n")
    control_lines = tuple(
        sorted({text.count("\n", 0, m.start()) + 1 for m in _CONTROL.finditer(text)})
    )
    text = _CONTROL.sub("", text)
    front = read_front_matter(path, text)
    meta = front.meta

    title = _text_field(path, meta, "title")
    body = front.body
    if not title:
        title, body = _title_from_heading(body)
    stripped = body.lstrip()
    body_line = front.body_line + body[: len(body) - len(stripped)].count("\n")
    body = stripped.rstrip()
    if not body:
        raise PostError(path, "the post has no body: write the newsletter below the front matter")
    if not title:
        raise PostError(path, _no_title(front))
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
        body_line=body_line,
        date=_date_field(path, meta, "date"),
        scheduled=_date_field(path, meta, "scheduled", with_time=True),
        subject=_text_field(path, meta, "subject"),
        preheader=_first_text(path, meta, "preheader", "description", "summary"),
        tags=_tags(path, meta),
        lang=_lang(path, meta),
        canonical_url=_first_text(path, meta, "canonical_url", "url"),
        control_lines=control_lines,
    )


def _title_from_heading(body: str) -> tuple[str | None, str]:
    """The first ``# Title`` before the first section and outside code, and the body with
    that line emptied (not dropped, so the lines after it keep their numbers)."""
    lines = body.split("\n")
    fence = None
    for number, line in enumerate(lines):
        opening = _FENCE.match(line)
        if fence is None and opening:
            fence = opening["fence"]
        elif fence is not None:
            closing = line.strip()
            if closing.startswith(fence) and not closing.strip(fence[0]):
                fence = None
        elif _SECTION.match(line):
            break
        elif heading := _H1.fullmatch(line):
            lines[number] = ""
            return heading["title"].strip(), "\n".join(lines)
    return None, body


def _no_title(front: FrontMatter) -> str:
    """Say what was found, so an author whose title went unseen learns why."""
    if front.found is None:
        return "the post has no title: add 'title:' to the front matter or start with '# Title'"
    return f"{front.found} but no title: add '{front.title_key}' to it or a '# Title' heading"


def _decode(path: Path, raw: bytes) -> str:
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise PostError(
            path, f"not UTF-8 text (byte 0x{raw[exc.start]:02x}): save the file as UTF-8", line
        ) from exc


def _text_field(path: Path, meta: dict[str, Any], key: str) -> str | None:
    value = meta.get(key)
    if value is None:
        return None
    if isinstance(value, (dict, list)):
        raise PostError(path, f"front matter '{key}' must be text, not a {type(value).__name__}")
    return str(value).strip() or None


def _first_text(path: Path, meta: dict[str, Any], *keys: str) -> str | None:
    """The first of the fields that generators use for the same thing."""
    return next((text for key in keys if (text := _text_field(path, meta, key))), None)


def _date_field(
    path: Path, meta: dict[str, Any], key: str, *, with_time: bool = False
) -> dt.date | dt.datetime | None:
    value = meta.get(key)
    if isinstance(value, dt.datetime) and not with_time:
        return value.date()
    if value is None or isinstance(value, dt.date):  # YAML or TOML parsed it
        return value
    # Generators accept 2020-12-2 and 2020/12/02: make them ISO before parsing.
    found = _DATE.fullmatch(str(value).strip())
    try:
        if found is None:
            raise ValueError(value)
        day = dt.date(int(found["y"]), int(found["m"]), int(found["d"]))
        parsed = dt.datetime.fromisoformat(day.isoformat() + found["time"])
    except ValueError as exc:
        raise PostError(
            path, f"front matter '{key}' is not a date: {value!r} (use YYYY-MM-DD)"
        ) from exc
    if with_time and (found["time"] or parsed.tzinfo):
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
