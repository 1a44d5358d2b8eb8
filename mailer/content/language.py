"""Which language a post is written in, as a BCP 47 tag for ``<html lang>``.

``py3langid`` names the language; for Chinese it cannot tell the script, so the
frequent characters that differ between Simplified and Traditional decide.
"""

from __future__ import annotations

__all__ = ["detect_lang"]

# Common characters whose Simplified and Traditional forms differ, pairwise.
_SIMPLIFIED = set("这们个来为说时国会学发对业与经过后动开关长门问间见电车东")
_SAMPLE = 1500  # characters: enough to decide; the classifier's time grows with the text
_TRADITIONAL = set("這們個來為說時國會學發對業與經過後動開關長門問間見電車東")


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
