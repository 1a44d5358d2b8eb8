"""The shape of a BCP 47 language tag: a tag names a strings file and a page's ``lang``.

Below everything else, since settings, posts and templates all check tags.
"""

from __future__ import annotations

import re

__all__ = ["LANGUAGE_TAG", "is_language_tag"]

# Language, then subtags such as script, region, variant: anything else (a path, say) must
# never reach the file system.
LANGUAGE_TAG = re.compile(r"[A-Za-z]{2,8}(?:-[A-Za-z0-9]{1,8})*")


def is_language_tag(value: str) -> bool:
    return LANGUAGE_TAG.fullmatch(value) is not None and len(value) <= 35
