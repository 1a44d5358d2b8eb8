"""Which language a post is written in, as a BCP 47 tag for ``<html lang>``.

``py3langid`` names the language; for Chinese it cannot tell the script, so the
frequent characters that differ between Simplified and Traditional decide.
"""

from __future__ import annotations

import re

__all__ = ["LANGUAGE_TAG", "detect_lang", "is_language_tag"]

# A BCP 47 tag's shape (language, then subtags such as script, region, variant): a tag
# names a strings file, so anything else (a path, say) must never reach the file system.
LANGUAGE_TAG = re.compile(r"[A-Za-z]{2,8}(?:-[A-Za-z0-9]{1,8})*")

# Common characters whose Simplified and Traditional forms differ, pairwise.
_SIMPLIFIED = set("这们个来为说时国会学发对业与经过后动开关长门问间见电车东")
_SAMPLE = 1500  # characters: enough to decide; the classifier's time grows with the text
_TRADITIONAL = set("這們個來為說時國會學發對業與經過後動開關長門問間見電車東")


def is_language_tag(value: str) -> bool:
    return LANGUAGE_TAG.fullmatch(value) is not None and len(value) <= 35


def detect_lang(text: str, default: str = "en") -> str:
    """Detect the language of ``text``; short or empty text gives ``default``."""
    sample = text[:_SAMPLE].strip()
    if len(sample) < 20:
        return default
    import py3langid  # here: loading its model takes ~0.6 s, wasted when a post names its lang

    code, _score = py3langid.classify(sample)
    if code == "zh":
        traditional = sum(ch in _TRADITIONAL for ch in sample)
        simplified = sum(ch in _SIMPLIFIED for ch in sample)
        return "zh-TW" if traditional > simplified else "zh-CN"
    return code
