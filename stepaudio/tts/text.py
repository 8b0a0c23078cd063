"""TTS text: the checks a text passes before any work, and splitting long text into segments the TTS-3B
context can hold, keeping the instruction tag."""

from __future__ import annotations

import difflib
import logging
import re
import unicodedata

from ..errors import PromptError
from ..validation import check_int, check_text, describe_value
from .prompts import KNOWN_INSTRUCTIONS, leading_instruction

logger = logging.getLogger(__name__)

__all__ = ["DEFAULT_MAX_SEGMENT_CHARS", "check_tts_text", "has_speakable_text", "split_tts_text"]

#: Default segment size.  Speech runs at roughly 10 audio tokens per Chinese character (41.67 tokens/s),
#: so 150 characters stay well inside the 8192-token TTS context next to the system and voice prompts.
DEFAULT_MAX_SEGMENT_CHARS = 150

# Sentence ends: CJK/ASCII terminal punctuation (a '.' only when followed by whitespace or the end, so
# "3.14" and "e.g" stay whole), plus closing quotes/brackets that directly follow it.
_SENTENCE_END = re.compile(r"(?:[。！？!?；;…]+|\.(?=\s|$))[”’\"')）》」』]*\s*")
# Weaker break points for over-long sentences: commas, colons, dashes, whitespace.
_CLAUSE_END = re.compile(r"[，,、：:—]+\s*|\s+")


def _split_tag(text: str) -> tuple[str, str | None, str]:
    """``(tag as written, instruction, rest)``: ``"（高兴1）你好"`` -> ``("（高兴1）", "高兴1", "你好")``."""
    instruction = leading_instruction(text)
    if instruction is None:
        return "", None, text
    tag = text[: len(instruction) + 2]
    return tag, instruction, text[len(tag) :]


def _speakable(text: str) -> bool:
    """Whether ``text`` holds a letter or a digit of any script (Unicode categories L* and N*)."""
    return any(unicodedata.category(character)[0] in "LN" for character in text)


def has_speakable_text(text: object) -> bool:
    """Whether ``text`` is a string with something to say after its leading ``(tag)``: a letter or a digit.

    Punctuation, emoji, symbols, control characters and whitespace alone give nothing to speak, nor
    does a tag alone.  Callers that speak generated text (a chat reply) use this to skip such text
    instead of failing; :func:`check_tts_text` refuses it.

    >>> has_speakable_text("（高兴1）你好"), has_speakable_text("😀!!!"), has_speakable_text("（高兴1）")
    (True, False, False)
    """
    return isinstance(text, str) and _speakable(_split_tag(text)[2])


def _unknown_tag_hint(instruction: str) -> str:
    """``"; did you mean 'RAP'?"`` when the tag is close to a known one (case, spaces, a digit off), else ``""``."""
    bare = instruction.strip()
    matches = [known for known in KNOWN_INSTRUCTIONS if known.casefold() == bare.casefold()]
    matches = matches or difflib.get_close_matches(bare, KNOWN_INSTRUCTIONS, n=3, cutoff=0.6)
    matches = sorted(matches, key=KNOWN_INSTRUCTIONS.index)
    return f" (did you mean {' or '.join(matches)}?)" if matches else ""


def check_tts_text(
    text: object,
    *,
    allow_unknown_tags: bool = False,
    warned_tags: set[str] | None = None,
    name: str = "text",
) -> str:
    """Check a text to synthesise before any work; returns it unchanged.

    Refused, each with a one-line message:

    * not a string, invalid Unicode (an unpaired surrogate from undecodable bytes) or a NUL character
      (:class:`~stepaudio.errors.InvalidArgumentError`);
    * nothing to speak: empty or blank, a tag alone, or only punctuation, emoji, symbols or control
      characters, i.e. no letter or digit of any script after the tag (:class:`~stepaudio.errors.PromptError`);
    * a leading ``(tag)`` that is not one of :data:`~stepaudio.tts.prompts.KNOWN_INSTRUCTIONS`
      (:class:`~stepaudio.errors.PromptError`), unless ``allow_unknown_tags``: then it is passed to the
      model as the original implementation does, with a warning logged once per tag (tags already in
      ``warned_tags`` are not logged again; new ones are added to it).
    """
    text = check_text(text, name, allow_empty=True)
    if not text.strip():
        raise PromptError(
            f"TTS text {describe_value(text)} is empty: give the words to say, optionally after a tag such as (高兴1)"
        )
    tag, instruction, rest = _split_tag(text)
    if instruction is not None and not rest.strip():
        raise PromptError(f"TTS text {describe_value(text)} is only the tag {tag}; add the text to speak after it")
    if not _speakable(rest):
        raise PromptError(
            f"TTS text {describe_value(text)} has nothing to speak (no letters or digits"
            + (" after the tag" if instruction is not None else "")
            + "); give the words to say: punctuation, emoji, symbols and control characters alone are not spoken"
        )
    if instruction is not None and instruction not in KNOWN_INSTRUCTIONS:
        known = ", ".join(KNOWN_INSTRUCTIONS)
        if not allow_unknown_tags:
            raise PromptError(
                f"TTS text starts with the unknown tag {tag}{_unknown_tag_hint(instruction)}; the known tags are "
                f"{known}: use one of them, drop the tag, or allow unknown tags (allow_unknown_tags=True) to pass "
                "it to the model unchecked as the original Step-Audio does"
            )
        if warned_tags is None or instruction not in warned_tags:
            logger.warning(
                "TTS text starts with the unknown tag %s; passing it to the model unchecked (known tags: %s)",
                tag,
                known,
            )
            if warned_tags is not None:
                warned_tags.add(instruction)
    return text


def _split_keeping_delimiters(text: str, pattern: re.Pattern[str]) -> list[str]:
    pieces, start = [], 0
    for match in pattern.finditer(text):
        if match.end() > start:
            pieces.append(text[start : match.end()])
            start = match.end()
    if start < len(text):
        pieces.append(text[start:])
    return [piece for piece in pieces if piece.strip()]


def _pack(pieces: list[str], max_chars: int) -> list[str]:
    """Greedily join consecutive pieces while the result stays within ``max_chars``."""
    segments: list[str] = []
    for piece in pieces:
        if segments and len(segments[-1]) + len(piece) <= max_chars:
            segments[-1] += piece
        else:
            segments.append(piece)
    return segments


def split_tts_text(text: str, max_chars: int = DEFAULT_MAX_SEGMENT_CHARS) -> list[str]:
    """Split ``text`` at sentence ends into segments of at most ``max_chars`` characters.

    Sentences are packed greedily; a sentence longer than ``max_chars`` is split at clause breaks
    (commas, colons, spaces) and, failing that, cut hard.  A leading ``(tag)`` applies to the whole
    text, so it is repeated at the start of every segment (not counted in ``max_chars``).

    >>> split_tts_text("(高兴1)你好。今天天气真好！", max_chars=4)
    ['(高兴1)你好。', '(高兴1)今天天气', '(高兴1)真好！']
    """
    check_int(max_chars, "max_chars", minimum=1)
    tag, _, text = _split_tag(text)
    text = text.strip()
    if not text:
        return [tag] if tag else []
    pieces: list[str] = []
    for sentence in _split_keeping_delimiters(text, _SENTENCE_END):
        if len(sentence) <= max_chars:
            pieces.append(sentence)
            continue
        for clause in _pack(_split_keeping_delimiters(sentence, _CLAUSE_END), max_chars):
            pieces.extend(clause[i : i + max_chars] for i in range(0, len(clause), max_chars))
    return [tag + segment.strip() for segment in _pack(pieces, max_chars)]
