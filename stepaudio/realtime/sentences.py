"""``SentenceStream``: incremental reply text in, complete TTS segments out (sentence ends first)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..streaming import Stream

__all__ = ["SentenceStream", "SentenceStreamState"]

# A sentence ends at CJK/ASCII terminal punctuation ('.' only before whitespace, so "3.14" stays whole).
_SENTENCE_END = re.compile(r"(?:[。！？!?；;…]+|\.(?=\s))[”’\"')）》」』]*\s*")
# Weaker breaks used once the pending text reaches the length limit.
_CLAUSE_END = re.compile(r"[，,、：:—]+\s*|\s+")


@dataclass
class SentenceStreamState:
    """Text received but not yet part of a returned segment."""

    pending: str = ""


class SentenceStream(Stream[str, list[str]]):
    """``feed(text delta) -> segments now complete``; ``close() -> [rest]``; ``reset()`` for a new reply.

    A segment ends at a sentence end, or -- once the pending text is ``max_chars`` long -- at the last
    clause break (comma, space) before the limit, or hard at the limit.
    """

    def __init__(self, max_chars: int) -> None:
        super().__init__()
        self.max_chars = max_chars
        self.state = SentenceStreamState()

    def _feed(self, piece: str) -> list[str]:
        self.state.pending += piece
        segments: list[str] = []
        while True:
            pending = self.state.pending
            match = _SENTENCE_END.search(pending)
            if match is not None and match.end() <= self.max_chars and match.end() < len(pending):
                cut = match.end()  # the end is followed by more text: the punctuation run is complete
            elif len(pending) > self.max_chars:
                breaks = [m.end() for m in _CLAUSE_END.finditer(pending, 0, self.max_chars)]
                cut = breaks[-1] if breaks else self.max_chars
            else:
                break
            segment, self.state.pending = pending[:cut], pending[cut:]
            if segment.strip():
                segments.append(segment)
        return segments

    def _flush(self) -> list[str]:
        rest, self.state.pending = self.state.pending, ""
        return [rest] if rest.strip() else []

    def _reset(self) -> None:
        self.state = SentenceStreamState()
