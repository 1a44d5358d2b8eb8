"""Which language a post is written in, as a BCP 47 tag for ``<html lang>``.

Many scripts give the language away, and counting letters costs microseconds where
``py3langid`` loads a model for about 0.6 s and 120 MB: Hangul is Korean, Kana is
Japanese, mostly-Han text is Chinese, Greek, Hebrew, Thai and a dozen others have one
language each, and Cyrillic and Arabic text tell Russian, Ukrainian, Persian and Urdu by
the letters only they use. Only the rest (Latin-script text above all) goes to the
classifier. For Chinese neither can tell the script, so the frequent characters that
differ between Simplified and Traditional decide.
"""

from __future__ import annotations

import bisect
from collections import Counter

__all__ = ["detect_lang"]

# Common characters whose Simplified and Traditional forms differ, pairwise.
_SIMPLIFIED = set("这们个来为说时国会学发对业与经过后动开关长门问间见电车东")
_SAMPLE = 1500  # characters: enough to decide; the classifier's time grows with the text
_TRADITIONAL = set("這們個來為說時國會學發對業與經過後動開關長門問間見電車東")
# Scripts by code point: (first, last, script), sorted. What is in none is "other".
_RANGES = sorted(
    [
        (0x0041, 0x005A, "latin"),
        (0x0061, 0x007A, "latin"),
        (0x00C0, 0x024F, "latin"),
        (0x0370, 0x03FF, "greek"),
        (0x1F00, 0x1FFF, "greek"),
        (0x0400, 0x052F, "cyrillic"),
        (0x0531, 0x058F, "armenian"),
        (0x0591, 0x05FF, "hebrew"),
        (0x0600, 0x06FF, "arabic"),
        (0x0750, 0x077F, "arabic"),
        (0x0900, 0x097F, "devanagari"),
        (0x0980, 0x09FF, "bengali"),
        (0x0A00, 0x0A7F, "gurmukhi"),
        (0x0A80, 0x0AFF, "gujarati"),
        (0x0B80, 0x0BFF, "tamil"),
        (0x0C00, 0x0C7F, "telugu"),
        (0x0C80, 0x0CFF, "kannada"),
        (0x0D00, 0x0D7F, "malayalam"),
        (0x0D80, 0x0DFF, "sinhala"),
        (0x0E00, 0x0E7F, "thai"),
        (0x0E80, 0x0EFF, "lao"),
        (0x1000, 0x109F, "myanmar"),
        (0x10A0, 0x10FF, "georgian"),
        (0x1100, 0x11FF, "hangul"),
        (0x1780, 0x17FF, "khmer"),
        (0x3040, 0x30FF, "kana"),
        (0x31F0, 0x31FF, "kana"),
        (0x3130, 0x318F, "hangul"),
        (0x3400, 0x4DBF, "han"),
        (0x4E00, 0x9FFF, "han"),
        (0xAC00, 0xD7AF, "hangul"),
        (0xF900, 0xFAFF, "han"),
        (0xFF66, 0xFF9F, "kana"),
        (0x20000, 0x2FA1F, "han"),
    ]
)
_STARTS = [first for first, _, _ in _RANGES]
# Scripts written by one language (among those a newsletter is likely to be in).
_ONE_LANGUAGE = {
    "armenian": "hy",
    "georgian": "ka",
    "greek": "el",
    "gujarati": "gu",
    "gurmukhi": "pa",
    "hebrew": "he",
    "kannada": "kn",
    "khmer": "km",
    "lao": "lo",
    "malayalam": "ml",
    "myanmar": "my",
    "sinhala": "si",
    "tamil": "ta",
    "telugu": "te",
    "thai": "th",
}
_RUSSIAN = set("абвгдеёжзийклмнопрстуфхцчшщъыьэюя")
_UKRAINIAN = set("абвгґдеєжзиіїйклмнопрстуфхцчшщьюя")
_UKRAINIAN_ONLY = set("єїґ")
_URDU_ONLY = set("ٹڈڑںےۓ")
_PERSIAN = set("پچژگکی")  # also Urdu's, not Arabic's: Persian writes keheh and Farsi yeh
# Kurdish, Uyghur, Pashto and Sindhi letters: those languages need the classifier.
_OTHER_ARABIC_SCRIPT = set("ەێۆڵڕټډړښږځڅڼٺٿڀڄڃڇڌڍڏڦڳڱ")


def detect_lang(text: str, default: str = "en") -> str:
    """Detect the language of ``text``; short or empty text gives ``default``."""
    sample = text[:_SAMPLE].strip()
    if len(sample) < 20:
        return default
    by_script = _by_script(sample)
    if by_script is not None:
        return by_script
    import py3langid  # here: loading its model takes ~0.6 s, wasted when the script decides

    code, _score = py3langid.classify(sample)
    return _chinese(sample) if code == "zh" else code


def _by_script(sample: str) -> str | None:
    """The language the letters' script gives away, or None when it takes the classifier."""
    letters = Counter(_script(ch) for ch in sample if ch.isalpha())
    letters.pop("other", None)
    total = sum(letters.values())
    if not total:
        return None
    cjk = letters["han"] + letters["kana"] + letters["hangul"]
    if cjk > total / 2:
        if letters["hangul"] > cjk / 2:
            return "ko"
        if letters["kana"] > cjk / 10:  # Japanese mixes kana into its Han; Chinese has none
            return "ja"
        if letters["han"] > cjk * 0.9:
            return _chinese(sample)
        return None
    script, count = letters.most_common(1)[0]
    if count <= total / 2:
        return None
    if script in _ONE_LANGUAGE:
        return _ONE_LANGUAGE[script]
    if script == "cyrillic":
        return _cyrillic(sample.lower())
    if script == "arabic":
        return _arabic(sample)
    return None


def _script(ch: str) -> str:
    point = ord(ch)
    at = bisect.bisect_right(_STARTS, point) - 1
    if at >= 0 and point <= _RANGES[at][1]:
        return _RANGES[at][2]
    return "other"


def _cyrillic(sample: str) -> str | None:
    """Ukrainian and Russian by their own letters; other Cyrillic languages need the
    classifier (Belarusian, Bulgarian, Serbian, Kazakh… share most of Russian's)."""
    cyrillic = {ch for ch in sample if "\u0400" <= ch <= "\u052f"}
    if cyrillic & _UKRAINIAN_ONLY or (cyrillic <= _UKRAINIAN and "і" in cyrillic):
        return "uk"
    if cyrillic <= _RUSSIAN and cyrillic & set("ыэ"):
        return "ru"
    return None


def _arabic(sample: str) -> str | None:
    """Urdu and Persian by the letters Arabic does not use; the script's other languages
    need the classifier."""
    letters = set(sample)
    if letters & _OTHER_ARABIC_SCRIPT:
        return None
    if letters & _URDU_ONLY:
        return "ur"
    if letters & _PERSIAN:
        return "fa"
    return "ar"


def _chinese(sample: str) -> str:
    traditional = sum(ch in _TRADITIONAL for ch in sample)
    simplified = sum(ch in _SIMPLIFIED for ch in sample)
    return "zh-TW" if traditional > simplified else "zh-CN"
