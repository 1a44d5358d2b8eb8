"""Raw HTML in a post: cleaned by a real sanitizer (ammonia, through ``nh3``) and reported.

The sanitizer removes; ``unsafe_parts`` names what it will remove, so the author
learns which line of the post lost a script, a form or an event handler.
"""

from __future__ import annotations

from collections.abc import Callable
from html.parser import HTMLParser
from urllib.parse import urlsplit

import nh3

__all__ = ["URL_SCHEMES", "clean_html", "is_safe_url", "unsafe_parts"]

URL_SCHEMES = frozenset({"http", "https", "mailto"})
_TAGS = frozenset(nh3.ALLOWED_TAGS)
_GENERIC_ATTRIBUTES = frozenset({"style", "title", "lang", "dir", "align"})
_ATTRIBUTES = {tag: set(attrs) for tag, attrs in nh3.ALLOWED_ATTRIBUTES.items()}
_ATTRIBUTES["img"] |= {"title"}
_ATTRIBUTES["*"] = set(_GENERIC_ATTRIBUTES)
_STYLE_PROPERTIES = frozenset(
    {
        "background-color", "border", "border-bottom", "border-collapse", "border-left",
        "border-radius", "border-right", "border-top", "color", "display", "font-family",
        "font-size", "font-style", "font-weight", "height", "line-height", "margin",
        "margin-bottom", "margin-left", "margin-right", "margin-top", "max-width", "padding",
        "padding-bottom", "padding-left", "padding-right", "padding-top", "text-align",
        "text-decoration", "vertical-align", "white-space", "width", "word-break",
    }
)  # fmt: skip


def is_safe_url(url: str) -> bool:
    """A URL a reader may follow: relative, or with a scheme on the allow-list."""
    scheme = urlsplit(url.strip()).scheme.lower()
    return not scheme or scheme in URL_SCHEMES


def clean_html(html: str, resolve: Callable[[str], str]) -> str:
    """Sanitize ``html``; ``resolve`` makes each kept ``href``/``src`` absolute."""

    def keep(tag: str, attribute: str, value: str) -> str | None:
        if attribute in ("href", "src"):
            return resolve(value) if is_safe_url(value) else None
        return value

    return nh3.clean(
        html,
        tags=set(_TAGS),
        attributes=_ATTRIBUTES,
        attribute_filter=keep,
        url_schemes=set(URL_SCHEMES),
        filter_style_properties=set(_STYLE_PROPERTIES),
        link_rel=None,
        strip_comments=True,
    )


def unsafe_parts(html: str) -> list[str]:
    """What ``clean_html`` would remove from ``html``, in words, in order, without repeats."""
    scanner = _Scanner()
    scanner.feed(html)
    scanner.close()
    return list(dict.fromkeys(scanner.found))


class _Scanner(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.found: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in _TAGS:
            self.found.append(f"<{tag}>")
            return
        allowed = _ATTRIBUTES.get(tag, set()) | _GENERIC_ATTRIBUTES
        for name, value in attrs:
            if name in ("href", "src") and value and not is_safe_url(value):
                scheme = urlsplit(value.strip()).scheme.lower()
                self.found.append(f"a {scheme}: {'link' if name == 'href' else 'source'}")
            elif name not in allowed:
                self.found.append(f"the {name} attribute of <{tag}>")
