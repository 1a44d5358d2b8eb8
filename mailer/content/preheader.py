"""The preheader: the line an inbox shows after the subject.

From the front matter, else the post's first paragraph, cut cleanly; then padded
with invisible characters so the inbox does not fill the rest of the line with
whatever body text follows (the footer's links, say).
"""

from __future__ import annotations

from markupsafe import Markup

from mailer.content.markdown import Parsed, inline_text
from mailer.content.textwidth import cut

__all__ = ["PADDING", "PREHEADER_WIDTH", "choose_preheader"]

# About what a wide inbox shows; CJK characters count two columns.
PREHEADER_WIDTH = 140
# Combining grapheme joiner, zero-width non-joiner, no-break space: invisible in every inbox.
PADDING = Markup("&#847;&zwnj;&nbsp;" * 90)


def choose_preheader(explicit: str | None, parsed: Parsed) -> str:
    """The author's preheader, else the first top-level paragraph; empty if neither exists."""
    if explicit:
        return cut(explicit, PREHEADER_WIDTH)
    tokens = parsed.tokens
    for index, token in enumerate(tokens):
        if token.type == "paragraph_open" and token.level == 0:
            return cut(inline_text(tokens[index + 1]), PREHEADER_WIDTH)
    return ""
