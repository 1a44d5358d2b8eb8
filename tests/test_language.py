"""The language of a post: by its script when that gives it away, else by py3langid."""

from __future__ import annotations

import json
import subprocess
import sys

import py3langid
import pytest

from mailer.content.language import detect_lang

# Each sample with the tag it must get.
BY_SCRIPT = {
    "ko": "이번 주 소식입니다. 새로운 모델이 공개되었고 많은 사람들이 관심을 보였습니다.",
    "ja": "今週のニュースです。新しいモデルが公開され、多くの人が関心を寄せました。",
    "zh-CN": "这周的新闻：新的模型发布了，很多人对这个问题很关心，我们来看看发生了什么。",
    "zh-TW": "這週的新聞：新的模型發布了，很多人對這個問題很關心，我們來看看發生了什麼。",
    "el": "Τα νέα της εβδομάδας: ένα νέο μοντέλο κυκλοφόρησε και πολλοί ενδιαφέρθηκαν.",
    "he": "החדשות של השבוע: מודל חדש שוחרר ואנשים רבים התעניינו בו מאוד.",
    "th": "ข่าวประจำสัปดาห์นี้ มีการเปิดตัวโมเดลใหม่และผู้คนจำนวนมากให้ความสนใจ",
    "ru": "Новости этой недели: вышла новая модель, и многие люди ею заинтересовались.",
    "uk": "Новини цього тижня: вийшла нова модель, і багато людей нею зацікавилися.",
    "ar": "أخبار هذا الأسبوع: تم إطلاق نموذج جديد واهتم به الكثير من الناس.",
    "fa": "اخبار این هفته: یک مدل جدید منتشر شد و بسیاری از مردم به آن علاقه نشان دادند.",
    "ur": "اس ہفتے کی خبریں: ایک نیا ماڈل جاری کیا گیا اور بہت سے لوگوں نے دلچسپی لی۔",
}
# Scripts shared by many languages: the classifier decides.
BY_CLASSIFIER = {
    "en": "This week's news: a new model was released and many people took an interest.",
    "de": "Die Nachrichten dieser Woche: Ein neues Modell ist erschienen und viele Leute "
    "haben sich dafür interessiert.",
    "bg": "Новините тази седмица: излезе нов модел и много хора се заинтересуваха от него.",
}


@pytest.mark.parametrize("lang", [*BY_SCRIPT, *BY_CLASSIFIER])
def test_the_tag_is_the_classifiers_own(lang: str) -> None:
    text = {**BY_SCRIPT, **BY_CLASSIFIER}[lang]
    assert detect_lang(text) == lang
    code, _ = py3langid.classify(text)  # what the script shortcut must agree with
    assert lang.startswith(code)


def test_a_script_that_gives_the_language_away_loads_no_model() -> None:
    script = (
        "import json, sys\n"
        "from mailer.content.language import detect_lang\n"
        "tags = [detect_lang(text) for text in json.loads(sys.argv[1])]\n"
        "print(json.dumps([tags, 'py3langid' in sys.modules]))\n"
    )
    answer = subprocess.run(
        [sys.executable, "-c", script, json.dumps(list(BY_SCRIPT.values()))],
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(answer.stdout) == [list(BY_SCRIPT), False]


def test_short_text_gives_the_default() -> None:
    assert detect_lang("Hi there", default="fr") == "fr"
