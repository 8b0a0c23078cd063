"""``instructions`` of ``/v1/audio/speech`` -> one Step-Audio-TTS tag, or a 400 that lists what is accepted.

Step-Audio-TTS-3B takes at most one tag, written before the text: ``（高兴1）今天天气真好``.  The
tags (:data:`~stepaudio.tts.prompts.KNOWN_INSTRUCTIONS`) are:

* emotion: ``高兴1`` happy, ``高兴2`` very happy, ``生气1`` angry, ``生气2`` very angry, ``悲伤1`` sad,
  ``撒娇1`` coquettish;
* language / dialect: ``中文`` ``英文`` ``韩语`` ``日语`` ``四川话`` ``粤语`` ``广东话``;
* music: ``RAP`` and ``哼唱`` (humming; both use the music decoder and, for a registered voice, its
  ``{voice}RAP`` / ``{voice}哼唱`` prompt);
* speed: ``慢速1`` slow, ``慢速2`` very slow, ``快速1`` fast, ``快速2`` very fast.

:func:`instruction_tag` reads free text (English or Chinese) as follows:

1. the instructions may be a tag itself, with or without brackets, any case: ``"RAP"``, ``"(高兴1)"``;
2. otherwise style words are looked up (whole English words, Chinese phrases, longest match first):
   ``happy``/``cheerful``/``开心`` -> ``高兴1``, ``excited``/``兴奋`` -> ``高兴2``, ``furious`` -> ``生气2``,
   ``Cantonese`` -> ``粤语``, ``rap`` -> ``RAP``, ``hum``/``sing`` -> ``哼唱``, ``slowly`` -> ``慢速1``, ... (see
   :data:`STYLE_WORDS`); an intensifier right before a word (``very``, ``extremely``, ``非常``, ``很``,
   ...) selects level 2 where the tag has one (``very happy`` -> ``高兴2``, ``非常慢`` -> ``慢速2``);
3. words for the default delivery (``natural``, ``neutral``, ``normal``, ``conversational``, ``clear``,
   ``friendly``, ``calm``, ``自然``, ...) ask for no tag;
4. refused with 400, naming the words found: no style word and no neutral word (``"like a pirate"``);
   two different styles (``"happy and slow"``: one tag per request; use ``speed`` for the tempo);
   a negated style (``"not angry"``, ``"不要生气"``: there is no tag for the absence of a style).

Two words of the same style keep the stronger level (``"happy, excited"`` -> ``高兴2``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..tts.prompts import KNOWN_INSTRUCTIONS
from .errors import APIError

__all__ = ["NEUTRAL_WORDS", "STYLE_WORDS", "InstructionStyle", "instruction_tag", "accepted_instructions"]


@dataclass(frozen=True)
class InstructionStyle:
    """One family of tags: level-1 tag, optional level-2 tag, and the words for each."""

    family: str
    tag: str
    words: tuple[str, ...]
    strong_tag: str | None = None
    strong_words: tuple[str, ...] = ()


#: Style words per family (English words match whole words, case-insensitively; Chinese phrases anywhere).
STYLE_WORDS: tuple[InstructionStyle, ...] = (
    InstructionStyle(
        "happy",
        "高兴1",
        (
            "happy",
            "happily",
            "cheerful",
            "cheerfully",
            "joyful",
            "joyfully",
            "glad",
            "upbeat",
            "delighted",
            "pleased",
            "高兴",
            "开心",
            "愉快",
            "快乐",
            "欢快",
        ),
        "高兴2",
        ("excited", "excitedly", "ecstatic", "thrilled", "elated", "overjoyed", "兴奋", "激动", "狂喜"),
    ),
    InstructionStyle(
        "angry",
        "生气1",
        ("angry", "angrily", "annoyed", "irritated", "mad", "cross", "生气", "恼火", "不满"),
        "生气2",
        ("furious", "furiously", "enraged", "outraged", "livid", "rage", "愤怒", "暴怒", "怒吼"),
    ),
    InstructionStyle(
        "sad",
        "悲伤1",
        (
            "sad",
            "sadly",
            "sorrowful",
            "sorrowfully",
            "melancholy",
            "gloomy",
            "unhappy",
            "mournful",
            "tearful",
            "悲伤",
            "难过",
            "伤心",
            "忧伤",
        ),
    ),
    InstructionStyle(
        "coquettish",
        "撒娇1",
        (
            "coquettish",
            "coquettishly",
            "cutesy",
            "cute",
            "pouty",
            "pouting",
            "whiny",
            "flirtatious",
            "撒娇",
            "嗲",
            "卖萌",
        ),
    ),
    InstructionStyle("chinese", "中文", ("chinese", "mandarin", "putonghua", "中文", "普通话", "汉语", "国语")),
    InstructionStyle("english", "英文", ("english", "英文", "英语")),
    InstructionStyle("korean", "韩语", ("korean", "韩语", "韩文", "韩国话")),
    InstructionStyle("japanese", "日语", ("japanese", "日语", "日文", "日本话")),
    InstructionStyle("sichuanese", "四川话", ("sichuanese", "sichuan", "szechuan", "szechuanese", "四川话", "川话")),
    InstructionStyle("cantonese", "粤语", ("cantonese", "粤语", "白话")),
    InstructionStyle("guangdong", "广东话", ("广东话",)),
    InstructionStyle(
        "rap", "RAP", ("rap", "raps", "rapping", "rapper", "hip-hop", "hip hop", "hiphop", "说唱", "饶舌")
    ),
    InstructionStyle(
        "humming",
        "哼唱",
        ("hum", "hums", "humming", "hummed", "sing", "sings", "singing", "sung", "哼唱", "哼歌", "唱歌", "歌唱"),
    ),
    InstructionStyle(
        "slow",
        "慢速1",
        (
            "slow",
            "slowly",
            "slower",
            "unhurried",
            "leisurely",
            "慢速",
            "慢一点",
            "慢一些",
            "慢些",
            "慢慢",
            "放慢",
            "缓慢",
            "语速慢",
            "说慢",
            "慢",
        ),
        "慢速2",
        ("sluggish", "sluggishly", "crawling", "极慢"),
    ),
    InstructionStyle(
        "fast",
        "快速1",
        (
            "fast",
            "quickly",
            "quick",
            "faster",
            "rapid",
            "rapidly",
            "brisk",
            "briskly",
            "快速",
            "快一点",
            "快一些",
            "快些",
            "加快",
            "语速快",
            "说快",
            "快",
        ),
        "快速2",
        ("rapid-fire", "breakneck", "极快"),
    ),
)

#: Words for the default delivery: they ask for no tag.
NEUTRAL_WORDS: tuple[str, ...] = (
    "neutral", "neutrally", "normal", "normally", "natural", "naturally", "default", "plain", "plainly",
    "standard", "conversational", "clear", "clearly", "friendly", "calm", "calmly", "自然", "正常", "平静",
    "清晰", "默认", "平稳",
)  # fmt: skip

_INTENSIFIERS = (
    "very", "really", "extremely", "super", "so", "incredibly", "highly", "especially", "truly", "totally",
    "非常", "很", "特别", "超级", "极其", "十分", "超", "极", "太",
)  # fmt: skip
_NEGATIONS = ("not", "no", "never", "don't", "dont", "do not", "without", "avoid", "isn't", "aren't", "less")
_CHINESE_NEGATIONS = ("不要", "不用", "不是", "没有", "别", "不", "勿", "无")
_NEGATION_FILLERS = ("be", "sound", "speak", "too", "so", "very", "overly", "that", "any", "at all", "overtly")


def _is_cjk(word: str) -> bool:
    return any("\u4e00" <= character <= "\u9fff" for character in word)


def _alternation(words: tuple[str, ...] | list[str]) -> str:
    return "|".join(re.escape(word) for word in sorted(set(words), key=len, reverse=True))


def _pattern() -> re.Pattern[str]:
    entries: dict[str, tuple[str, int]] = {}
    for style in STYLE_WORDS:
        for word in style.words:
            entries[word.casefold()] = (style.family, 1)
        for word in style.strong_words:
            entries[word.casefold()] = (style.family, 2)
    for word in NEUTRAL_WORDS:
        entries[word.casefold()] = ("neutral", 0)
    _ENTRIES.update(entries)
    latin = _alternation([word for word in entries if not _is_cjk(word)])
    chinese = _alternation([word for word in entries if _is_cjk(word)])
    latin_boost = _alternation([word for word in _INTENSIFIERS if not _is_cjk(word)])
    chinese_boost = _alternation([word for word in _INTENSIFIERS if _is_cjk(word)])
    latin_not = _alternation(list(_NEGATIONS))
    chinese_not = _alternation(list(_CHINESE_NEGATIONS))
    filler = _alternation(list(_NEGATION_FILLERS))
    return re.compile(
        rf"(?P<neg>\b(?:{latin_not})\s+(?:(?:{filler})\s+){{0,2}}|(?:{chinese_not})(?:要|太|很|那么|用)?)?"
        rf"(?P<boost>(?:\b(?:{latin_boost})\s+)+|(?:{chinese_boost})+)?"
        rf"(?P<word>\b(?:{latin})\b|(?:{chinese}))",
        re.IGNORECASE,
    )


_ENTRIES: dict[str, tuple[str, int]] = {}
_WORDS = _pattern()
_STYLES = {style.family: style for style in STYLE_WORDS}
_TAGS_BY_NAME = {tag.casefold(): tag for tag in KNOWN_INSTRUCTIONS}


def accepted_instructions() -> str:
    """The one-line summary of what ``instructions`` accepts (used in every refusal)."""
    examples = (
        "emotion (happy, very happy/excited, angry, furious, sad, coquettish; 高兴, 生气, 悲伤, 撒娇), "
        "language or dialect (Chinese, English, Korean, Japanese, Sichuanese, Cantonese; 四川话, 粤语, 广东话), "
        "RAP (rap, 说唱), humming (hum, sing, 哼唱), speed (slow, very slow, fast, very fast; 慢速, 快速), "
        "or the default delivery (natural, neutral, conversational, 自然)"
    )
    return f"one tag ({', '.join(KNOWN_INSTRUCTIONS)}) or words for one style: {examples}"


def _refuse(message: str) -> APIError:
    return APIError(
        400, f"{message}; accepted: {accepted_instructions()}", param="instructions", code="unsupported_instructions"
    )


def instruction_tag(instructions: str | None) -> str | None:
    """The Step-Audio tag ``instructions`` ask for (``None``: no tag), or a 400 :class:`APIError`.

    >>> instruction_tag("Speak very happily"), instruction_tag("用四川话说"), instruction_tag("natural")
    ('高兴2', '四川话', None)
    """
    if instructions is None or not instructions.strip():
        return None
    text = instructions.strip()
    bare = text.strip("()（） \t").casefold()
    if bare in _TAGS_BY_NAME:
        return _TAGS_BY_NAME[bare]
    found: dict[str, tuple[int, str]] = {}  # family -> (strongest level, word as written)
    neutral = False
    for match in _WORDS.finditer(text):
        word = match.group("word")
        family, level = _ENTRIES[word.casefold()]
        if match.group("neg"):
            phrase = match.group(0).strip()
            if family == "neutral":
                continue
            raise _refuse(
                f"instructions {text[:80]!r} ask for the absence of a style ({phrase!r}): Step-Audio-TTS has tags "
                "for a style, not for its absence; leave it out"
            )
        if family == "neutral":
            neutral = True
            continue
        style = _STYLES[family]
        if match.group("boost") and style.strong_tag is not None:
            level = 2
        if family not in found or level > found[family][0]:
            found[family] = (level, match.group(0).strip())
    if not found:
        if neutral:
            return None
        raise _refuse(f"instructions {text[:80]!r} name no style Step-Audio-TTS knows")
    if len(found) > 1:
        named = ", ".join(f"{word!r} ({_tag(family, level)})" for family, (level, word) in found.items())
        raise _refuse(
            f"instructions {text[:80]!r} name {len(found)} styles: {named}; Step-Audio-TTS applies one tag per "
            "request: keep one (the speed parameter changes the tempo of any style)"
        )
    family, (level, _) = next(iter(found.items()))
    return _tag(family, level)


def _tag(family: str, level: int) -> str:
    style = _STYLES[family]
    return style.strong_tag if level == 2 and style.strong_tag is not None else style.tag
