"""Lean email HTML: the same page in fewer bytes, so that long issues stay under Gmail's clip.

MJML's output, and the theme's inline styles, repeat declarations that change nothing:
a property an element would inherit anyway with the same value from an ancestor's own
``style`` (``word-break`` on every link of a text block that already has it), and a
value the browser gives that element by default (``text-decoration:underline`` on a
link). ``lean`` drops those, and the whitespace between block tags and in style sheets.

Only what is inline counts as inherited, so a client that ignores ``<style>`` (Gmail's
apps for non-Gmail accounts) sees the same page. Outlook's conditional comments are left
exactly as they are.
"""

from __future__ import annotations

import re

__all__ = ["lean"]

# Inherited properties, and the elements whose own default (the browser's style sheet)
# sets them: a value inherited from above does not reach those.
_INHERITED: dict[str, frozenset[str]] = {
    "color": frozenset({"a"}),
    "font-family": frozenset({"code", "pre", "kbd", "samp", "tt"}),
    "font-size": frozenset(
        {"h1", "h2", "h3", "h4", "h5", "h6", "small", "sub", "sup", "code", "pre"}
    ),
    "font-style": frozenset({"em", "i", "cite", "var", "dfn", "address"}),
    "font-weight": frozenset({"h1", "h2", "h3", "h4", "h5", "h6", "b", "strong", "th"}),
    "line-height": frozenset(),
    "text-align": frozenset({"th"}),
    "word-break": frozenset(),
    "white-space": frozenset({"pre", "textarea"}),
    "direction": frozenset(),
}
# The browsers' default for an element, where it is what the theme writes again.
_DEFAULTS: dict[str, dict[str, str]] = {
    "a": {"text-decoration": "underline"},
    "u": {"text-decoration": "underline"},
    "s": {"text-decoration": "line-through"},
    "del": {"text-decoration": "line-through"},
}
# Bold by default: inside normal-weight text, setting it to 700 changes nothing.
_BOLD = frozenset({"b", "strong"})
_VOID = frozenset(
    {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "wbr"}
)
# Whitespace between two of these tags is never shown.
_BLOCK = (
    "html|head|title|meta|link|style|body|div|table|thead|tbody|tfoot|tr|td|th|p|ul|ol|li|"
    "h[1-6]|blockquote|hr|center|noscript|xml|o:[a-z]+"
)
_BETWEEN_BLOCKS = re.compile(
    rf"(<(?:/?(?:{_BLOCK})\b[^>]*|!--\[if [^\]]*\]|!\[endif\]--)>)\s+(?=<(?:/?(?:{_BLOCK})\b|!--))"
)
_PIECE = re.compile(
    r"(<!--.*?-->)|(<pre\b[^>]*>)(.*?</pre>)|<(/?)([a-zA-Z][\w:-]*)([^>]*)>", re.DOTALL
)
_STYLE_ATTR = re.compile(r'(\sstyle=")([^"]*)(")')
_STYLE_SHEET = re.compile(r"(<style\b[^>]*>)(.*?)(</style>)", re.DOTALL)


def lean(html: str) -> str:
    """``html`` without the declarations, comments' neighbours' whitespace and style sheet
    spacing that change nothing a reader sees."""
    html = _STYLE_SHEET.sub(lambda m: m[1] + _minify_css(m[2]) + m[3], html)
    html = _BETWEEN_BLOCKS.sub(r"\1", html)
    return _dedupe_styles(html)


def _minify_css(css: str) -> str:
    css = re.sub(r"\s+", " ", css)
    css = re.sub(r"\s*([{};])\s*", r"\1", css)
    return css.replace(";}", "}").strip()


def _declarations(style: str) -> list[tuple[str, str]]:
    pairs = []
    for part in style.split(";"):
        name, colon, value = part.partition(":")
        if colon and name.strip():
            pairs.append((name.strip().lower(), value.strip()))
    return pairs


def _dedupe_styles(html: str) -> str:
    """Walk the tags, knowing what each element inherits from its ancestors' inline styles,
    and drop each declaration that only says it again."""
    out: list[str] = []
    # (tag, what its children inherit): property → value, "bold" for a known-bold weight.
    stack: list[tuple[str, dict[str, str]]] = [("", {"font-weight": "400"})]
    last = 0
    for match in _PIECE.finditer(html):
        comment, pre_tag, pre_rest, closing, tag, rest = match.groups()
        if comment:
            # Outlook's own elements, in conditional comments, sit between the others
            # there: what they set is no longer known to be inherited.
            for style in _STYLE_ATTR.findall(comment):
                for name, _value in _declarations(style[1]):
                    if name in _INHERITED:
                        stack[-1][1][name] = "?"
            continue
        out.append(html[last : match.start()])
        last = match.end()
        if pre_tag:  # the text of a <pre> is left exactly as it is
            out.append(_lean_tag(pre_tag, "pre", stack[-1][1])[0] + pre_rest)
            continue
        tag = tag.lower()
        if closing:
            while len(stack) > 1:
                if stack.pop()[0] == tag:
                    break
            out.append(match[0])
            continue
        inherited = stack[-1][1]
        leaned, declared = _lean_tag(match[0], tag, inherited)
        out.append(leaned)
        if tag not in _VOID and not rest.rstrip().endswith("/"):
            stack.append((tag, _passes_on(tag, declared, inherited)))
    out.append(html[last:])
    return "".join(out)


def _lean_tag(text: str, tag: str, inherited: dict[str, str]) -> tuple[str, list[tuple[str, str]]]:
    """The tag without the declarations that change nothing, and all it declared (parsed
    once, for what its children inherit)."""
    found = _STYLE_ATTR.search(text)
    if not found:
        return text, []
    declared = _declarations(found[2])
    kept = [
        f"{name}:{value}"
        for name, value in declared
        if not _changes_nothing(tag, name, value, inherited)
    ]
    if len(kept) == len(declared):
        return text, declared
    if not kept:
        return text[: found.start()] + text[found.end() :], declared
    style = f"{found[1]}{';'.join(kept)};{found[3]}"
    return text[: found.start()] + style + text[found.end() :], declared


def _changes_nothing(tag: str, name: str, value: str, inherited: dict[str, str]) -> bool:
    if "!important" in value:
        return False
    if name in _INHERITED and tag not in _INHERITED[name] and inherited.get(name) == value:
        return True
    if _DEFAULTS.get(tag, {}).get(name) == value:
        return True
    return (
        tag in _BOLD
        and name == "font-weight"
        and value in ("700", "bold")
        and inherited["font-weight"] in ("400", "normal")
    )


def _passes_on(
    tag: str, declared: list[tuple[str, str]], inherited: dict[str, str]
) -> dict[str, str]:
    """What the children of this element inherit, as far as inline styles tell."""
    passed = {
        name: value
        for name, value in inherited.items()
        if name not in _INHERITED or tag not in _INHERITED[name]
    }
    if tag in _INHERITED["font-weight"]:
        passed["font-weight"] = "bold"
    passed.setdefault("font-weight", "400")
    for name, value in declared:
        if name in _INHERITED:
            passed[name] = value
    return passed
