"""Front matter as the site generators write it, read into one dict with lower-case keys.

Weeklies come from Jekyll, Eleventy, Hexo, Hugo, Zola and Pelican; each reader below
recognises one way of writing the metadata and reports a broken block with the file's
line, naming the format it found, so the author knows what the mailer thought it saw.
"""

from __future__ import annotations

import json
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from mailer.errors import PostError

__all__ = ["FrontMatter", "read_front_matter"]

# Pelican, MultiMarkdown and Python-Markdown meta: "Key: value", then indented continuations.
_META_LINE = re.compile(r"(?P<key>[A-Za-z0-9][A-Za-z0-9_-]*):(?:[ \t]+(?P<value>.*))?")
_CONTINUATION = re.compile(r"(?: {4}|\t)[ \t]*(?P<value>\S.*)")
# A block of "Key: value" lines is only metadata if it sets one of these, so a first
# paragraph such as "Note: we are late" stays in the post.
_META_KEYS = {"title", "date", "modified", "slug", "tags", "category", "summary", "lang", "authors"}
_TOML_LINE = re.compile(r"\s*\(at line (?P<line>\d+), column \d+\)$")


@dataclass(frozen=True)
class FrontMatter:
    """What a post's metadata said, where its body starts, and how it was written."""

    meta: dict[str, Any]
    body: str
    body_line: int  # line of the file where ``body`` starts
    found: str | None  # what was found, for messages; None when the post has no metadata
    title_key: str = "title: …"  # how a title is written there


def read_front_matter(path: Path, text: str) -> FrontMatter:
    """The first format ``text`` starts with; a post without metadata is all body."""
    for reader in (_yaml, _toml, _json, _meta_block):
        front = reader(path, text)
        if front is not None:
            return front
    return FrontMatter({}, text, 1, None)


def _fenced(path: Path, text: str, mark: str) -> tuple[str, int, str, int] | None:
    """The text between a first line ``mark`` and the next such line, its first line in the
    file, then the body after it and the body's first line."""
    fence = re.escape(mark) + re.escape(mark[0]) + "*"
    lead = len(text) - len(text.lstrip())
    opening = re.compile(rf"{fence}[ \t]*(?:\n|\Z)").match(text, lead)
    if opening is None:
        return None
    start_line = text.count("\n", 0, lead) + 1
    closing = re.compile(rf"^{fence}[ \t]*$\n?", re.MULTILINE).search(text, opening.end())
    if closing is None:
        raise PostError(
            path,
            f"front matter opened with '{mark}' on line {start_line} but never closed: "
            f"end it with a '{mark}' line before the body",
            start_line,
        )
    front = text[opening.end() : closing.start()]
    body_line = text.count("\n", 0, closing.end()) + 1
    return front, start_line + 1, text[closing.end() :], body_line


def _yaml(path: Path, text: str) -> FrontMatter | None:
    """YAML between ``---`` lines: Jekyll, Eleventy, Hexo, Hugo."""
    fenced = _fenced(path, text, "---")
    if fenced is None:
        return None
    front, line, body, body_line = fenced
    try:
        meta = yaml.safe_load(front) or {}
    except yaml.YAMLError as exc:
        # Where the broken construct starts (an unclosed bracket, say), else where it broke.
        mark = getattr(exc, "context_mark", None) or getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        context = getattr(exc, "context", None)
        message = f"malformed YAML front matter: {problem}" + (f" ({context})" if context else "")
        raise PostError(path, message, line + mark.line if mark else None) from exc
    if not isinstance(meta, dict):
        raise PostError(path, "the front matter must be a mapping of keys to values", line)
    return FrontMatter(_lower(meta), body, body_line, "YAML front matter found")


def _toml(path: Path, text: str) -> FrontMatter | None:
    """TOML between ``+++`` lines: Hugo, Zola (whose tags sit in ``[taxonomies]``)."""
    fenced = _fenced(path, text, "+++")
    if fenced is None:
        return None
    front, line, body, body_line = fenced
    try:
        meta = _lower(tomllib.loads(front))
    except tomllib.TOMLDecodeError as exc:
        where = _TOML_LINE.search(str(exc))
        problem = _TOML_LINE.sub("", str(exc))
        raise PostError(
            path,
            f"TOML front matter between +++ lines is malformed: {problem}",
            line + int(where["line"]) - 1 if where else None,
        ) from exc
    taxonomies = meta.get("taxonomies")
    if "tags" not in meta and isinstance(taxonomies, dict):
        meta["tags"] = taxonomies.get("tags")
    return FrontMatter(meta, body, body_line, "TOML front matter found", 'title = "…"')


def _json(path: Path, text: str) -> FrontMatter | None:
    """A JSON object at the very start, the body after it: Hugo. Opening with ``{"`` keeps
    a template tag such as ``{% include %}`` in the body."""
    start = re.compile(r"\s*(?=\{\s*[\"}])").match(text)
    if start is None:
        return None
    try:
        meta, end = json.JSONDecoder().raw_decode(text, start.end())
    except json.JSONDecodeError as exc:
        raise PostError(path, f"JSON front matter is malformed: {exc.msg}", exc.lineno) from exc
    line = text.count("\n", 0, end) + 1
    return FrontMatter(_lower(meta), text[end:], line, "JSON front matter found", '"title": "…"')


def _meta_block(path: Path, text: str) -> FrontMatter | None:
    """``Key: value`` lines up to the first blank line: Pelican, MultiMarkdown, Python-Markdown.

    Every line must be such a line or an indented continuation, and one key must be known,
    or the lines are the post's first paragraph.
    """
    head, blank, body = text.partition("\n\n")
    meta: dict[str, str] = {}
    key = None
    for line in head.split("\n"):
        pair = _META_LINE.fullmatch(line)
        more = _CONTINUATION.fullmatch(line)
        if pair:
            key = pair["key"].lower()
            meta[key] = (pair["value"] or "").strip()
        elif more and key:
            meta[key] = f"{meta[key]} {more['value'].strip()}".strip()
        else:
            return None
    if not meta.keys() & _META_KEYS:
        return None
    body_line = head.count("\n") + 3 if blank else 1
    return FrontMatter(meta, body, body_line, "metadata block found (Pelican style)", "Title: …")


def _lower(meta: dict[Any, Any]) -> dict[str, Any]:
    """Keys as any generator spells them (``Title``, ``title``) mean the same field."""
    return {str(key).lower(): value for key, value in meta.items()}
