"""Splitting long TTS text into segments the TTS-3B context can hold, keeping the instruction tag."""

from __future__ import annotations

import re

from .prompts import leading_instruction

__all__ = ["DEFAULT_MAX_SEGMENT_CHARS", "split_tts_text"]

#: Default segment size.  Speech runs at roughly 10 audio tokens per Chinese character (41.67 tokens/s),
#: so 150 characters stay well inside the 8192-token TTS context next to the system and voice prompts.
DEFAULT_MAX_SEGMENT_CHARS = 150

# Sentence ends: CJK/ASCII terminal punctuation (a '.' only when followed by whitespace or the end, so
# "3.14" and "e.g" stay whole), plus closing quotes/brackets that directly follow it.
_SENTENCE_END = re.compile(r"(?:[。！？!?；;…]+|\.(?=\s|$))[”’\"')）》」』]*\s*")
# Weaker break points for over-long sentences: commas, colons, dashes, whitespace.
_CLAUSE_END = re.compile(r"[，,、：:—]+\s*|\s+")


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
    if max_chars < 1:
        raise ValueError(f"max_chars must be positive, got {max_chars}")
    instruction = leading_instruction(text)
    tag = ""
    if instruction is not None:
        tag = text[: len(instruction) + 2]
        text = text[len(tag) :]
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
