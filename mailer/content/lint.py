"""What in an edition would hurt its readers, found before it is sent.

The checks read the finished HTML (what readers get), not the Markdown, so they
also catch what a template or an override introduced.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from html.parser import HTMLParser
from pathlib import PurePosixPath
from urllib.parse import unquote, urlsplit

from mailer.config import Settings
from mailer.content.post import Post
from mailer.content.textwidth import cut, display_width
from mailer.edition import UNSUBSCRIBE_PLACEHOLDER, VIEW_PLACEHOLDER, Edition, Finding
from mailer.headers import header_text_problem

__all__ = ["CLIP_LIMIT", "SUBJECT_WIDTH", "FindingGroup", "group_findings", "lint"]

# Gmail hides everything after about 102 KB of HTML behind "[Message clipped]".
CLIP_LIMIT = 102_000
# Columns of a subject that phones show before cutting it (CJK characters count two).
SUBJECT_WIDTH = 60
_PLACEHOLDERS = (UNSUBSCRIBE_PLACEHOLDER, VIEW_PLACEHOLDER)
# Lines of a group of findings written out; the rest are counted.
SHOWN_LINES = 12


def lint(
    edition: Edition,
    settings: Settings,
    post: Post | None = None,
    last_preheader: str | None = None,
) -> list[Finding]:
    """Every finding for ``edition``: those of loading ``post`` (when given) and of rendering
    first, then those of the HTML; ``last_preheader`` is the last sent issue's (last_issue.py)."""
    findings = _check_post(post) if post else []
    findings.extend(edition.findings)
    size = edition.size
    if edition.moved:
        named = [f"“{s.title}”" for s in edition.moved if s.title]
        more = f" and {len(named) - 5} more" if len(named) > 5 else ""
        titles = ", ".join(named[:5]) + more if named else "its end"
        message = (
            f"too long for Gmail's {CLIP_LIMIT // 1000} KB clip once links are tracked: the "
            f"email is shortened from {edition.full_size / 1000:.0f} KB to {size / 1000:.0f} KB "
            f"and continues on the web with {titles}"
        )
        findings.append(Finding("warning", "shortened", message))
    if size > CLIP_LIMIT:
        findings.append(
            Finding(
                "error",
                "clipped",
                f"the HTML is {size / 1000:.0f} KB; Gmail clips email over "
                f"{CLIP_LIMIT / 1000:.0f} KB: shorten the post or move parts to the web",
            )
        )
    elif size > CLIP_LIMIT * 0.9 and not edition.moved:
        message = f"the HTML is {size / 1000:.0f} KB, close to Gmail's {CLIP_LIMIT // 1000} KB clip"
        findings.append(Finding("warning", "near-clip", message))

    scanner = _Scanner()
    scanner.feed(edition.web_html or edition.html)  # the sections moved to the web too
    scanner.close()
    for href in scanner.hrefs:
        findings.extend(_check_link(href))
    places = _ImageLines(post)
    for src, alt in scanner.images:
        line = places.line_of(src)
        findings.extend(dataclasses.replace(f, line=line) for f in _check_image(src, alt))

    findings.extend(_check_header_text(edition))
    width = display_width(edition.subject)
    if width > SUBJECT_WIDTH:
        message = f"the subject is {width} columns wide; phones show about {SUBJECT_WIDTH}"
        findings.append(Finding("warning", "long-subject", message))
    if not edition.preheader:
        message = "no preheader: add 'preheader:' to the front matter or open with a paragraph"
        findings.append(Finding("warning", "missing-preheader", message))
    elif last_preheader and " ".join(edition.preheader.split()) == " ".join(last_preheader.split()):
        message = (
            f"the preheader is the same as the last issue's (“{cut(edition.preheader, 60)}”): "
            "readers see the same inbox preview every week; write this issue's own 'preheader:' "
            "in the front matter"
        )
        findings.append(Finding("warning", "same-preheader", message))
    if not settings.postal_address:
        message = (
            "no postal address in the footer (the law asks for one): set MAILER_POSTAL_ADDRESS"
        )
        findings.append(Finding("warning", "no-postal-address", message))
    return findings


def _check_post(post: Post) -> list[Finding]:
    """Control characters were removed on loading (they made the MJML invalid); say where, as
    the author may have pasted more than those invisible bytes."""
    message = "removed invisible control characters (they break the email): check what was pasted"
    return [Finding("warning", "control-character", message, line) for line in post.control_lines]


def _check_header_text(edition: Edition) -> list[Finding]:
    """The subject becomes the Subject header, where an encoded word or a control character
    could forge headers (CVE-2024-6923) and every backend refuses it; the preheader, the
    inbox's line after it, is held to the same rule."""
    found = []
    # Without a front-matter subject the title is the subject.
    origin = "the front matter's 'subject'" if edition.subject != edition.title else "the title"
    problem = header_text_problem(edition.subject)
    if problem:
        message = f"{origin} {problem}: it becomes the Subject header; write plain text"
        found.append(Finding("error", "unsafe-subject", message))
    problem = header_text_problem(edition.preheader)
    if problem:
        message = f"the preheader {problem}: write plain text"
        found.append(Finding("error", "unsafe-preheader", message))
    return found


def _check_link(href: str) -> list[Finding]:
    # The web version, maybe at a section ("continue reading"), is filled in at the send.
    if href.partition("#")[0] in _PLACEHOLDERS or href.startswith("mailto:"):
        return []
    scheme = urlsplit(href).scheme.lower()
    if scheme in ("javascript", "vbscript", "data"):
        return [Finding("error", "unsafe-link", f"a {scheme}: link: {href[:60]}")]
    if scheme not in ("http", "https"):
        return [Finding("error", "relative-link", f"a link that is not absolute: {href!r}")]
    return []


def _check_image(src: str, alt: str | None) -> list[Finding]:
    found: list[Finding] = []
    parts = urlsplit(src)
    if parts.scheme not in ("http", "https"):
        found.append(
            Finding("error", "relative-image", f"an image source that is not absolute: {src!r}")
        )
    elif parts.scheme == "http":
        message = f"an http: image ({src}) shows as broken or insecure in many clients: use https"
        found.append(Finding("warning", "http-image", message))
    suffix = PurePosixPath(parts.path).suffix.lower()
    if suffix == ".svg":
        message = f"an SVG image ({src}): Gmail and Outlook do not show SVG; use PNG or JPEG"
        found.append(Finding("error", "svg-image", message))
    elif suffix == ".webp":
        message = f"a WebP image ({src}): Outlook for Windows does not show WebP; use PNG or JPEG"
        found.append(Finding("warning", "webp-image", message))
    if not (alt or "").strip():
        message = f"an image without alt text ({src}): write ![what it shows]({src})"
        found.append(Finding("error", "missing-alt", message))
    return found


class _Scanner(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.hrefs: list[str] = []
        self.images: list[tuple[str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "a" and values.get("href") is not None:
            self.hrefs.append(str(values["href"]))
        elif tag == "img":
            self.images.append((str(values.get("src") or ""), values.get("alt")))


class _ImageLines:
    """The line of the post each image of the HTML is written on, so that a finding about
    it says where: the first line not yet taken that names the image's file."""

    def __init__(self, post: Post | None) -> None:
        lines = post.body.split("\n") if post else []
        self.lines = list(enumerate(lines, post.body_line if post else 1))
        self.taken: set[int] = set()

    def line_of(self, src: str) -> int | None:
        name = unquote(PurePosixPath(urlsplit(src).path).name)
        if not name:
            return None
        for number, text in self.lines:
            if number not in self.taken and name in unquote(text):
                self.taken.add(number)
                return number
        return None


@dataclasses.dataclass(frozen=True)
class FindingGroup:
    """The findings of one kind, counted, with the lines they are on: a post with 44 images
    without alt text gets one line of output, not 44."""

    severity: str
    code: str
    findings: tuple[Finding, ...]

    @property
    def lines(self) -> list[int]:
        return sorted({f.line for f in self.findings if f.line})

    def __str__(self) -> str:
        first = self.findings[0]
        if len(self.findings) == 1:
            return str(first)
        lines = self.lines
        where = ""
        if lines:
            shown = ", ".join(str(n) for n in lines[:SHOWN_LINES])
            more = f", … ({len(lines) - SHOWN_LINES} more)" if len(lines) > SHOWN_LINES else ""
            where = f" line{'s' if len(lines) > 1 else ''} {shown}{more}:"
        same = all(f.message == first.message for f in self.findings)
        example = first.message if same else f"first: {first.message}"
        return f"{self.severity} [{self.code}] ×{len(self.findings)}:{where} {example}"


def group_findings(findings: Iterable[Finding]) -> list[FindingGroup]:
    """Findings grouped by kind (code and severity), errors first, each kind in the order
    it first appears."""
    groups: dict[tuple[str, str], list[Finding]] = {}
    for finding in findings:
        groups.setdefault((finding.severity, finding.code), []).append(finding)
    ordered = sorted(groups.items(), key=lambda item: item[0][0] != "error")
    return [FindingGroup(severity, code, tuple(found)) for (severity, code), found in ordered]
