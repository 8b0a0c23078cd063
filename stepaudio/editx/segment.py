"""Long inputs for Step-Audio-EditX: audio cut at pauses, transcripts shared out, outputs joined again.

The model was trained on clips of at most about 30 s (the original's README: "keep audio under 30
seconds per inference"), and an edit writes out about as many audio tokens as it reads.  Longer
audio is therefore edited piece by piece:

1. :func:`segment_audio` cuts the audio into spans of at most ``max_seconds``, each cut at the
   quietest 20 ms frame of the last ``search_seconds`` before the limit (a pause, in speech);
2. :func:`share_text` gives each span the part of the transcript that it most likely holds: the
   transcript is cut at sentence or clause ends (else between words or characters) in proportion to
   the spans' durations.  This is a heuristic (no alignment model is used); pass the spans'
   transcripts yourself when they are known;
3. each span is edited on its own and :func:`join_audio` puts the results back together with a
   short cross-fade.

Clone text is split at sentence ends by :func:`split_clone_text` (the language prefix is kept on
every piece).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import numpy as np
import torch

from ..validation import check_float, check_int
from .edit_config import LANGUAGES

__all__ = [
    "DEFAULT_MAX_SEGMENT_SECONDS",
    "DEFAULT_MAX_CLONE_CHARS",
    "StreamedJoin",
    "join_audio",
    "segment_audio",
    "share_text",
    "split_clone_text",
    "split_tagged_like",
]

#: Longest audio edited in one pass (the original's advice: keep audio under 30 s per inference).
DEFAULT_MAX_SEGMENT_SECONDS = 30.0
#: Longest clone text piece: about 25-30 s of Mandarin speech, 8 s of English.
DEFAULT_MAX_CLONE_CHARS = 120

_FRAME_SECONDS = 0.02
# Sentence ends (CJK or ASCII terminal punctuation, '.' only before whitespace/end) with closing quotes.
_SENTENCE_END = re.compile(r"(?:[。！？!?；;…]+|\.(?=\s|$))[”’\"')）》」』]*\s*")
_CLAUSE_END = re.compile(r"[，,、：:—]+\s*|\s+")
_TAG = re.compile(r"\[[^\[\]]*\]")
_ENDS_SENTENCE = re.compile(r"(?:[。！？!?；;…]|\.)[”’\"')）》」』]*\s*$")
#: How far (share of the text) a cut may move from its proportional place to land on a sentence end (2) or a
#: clause end or space (1) instead of inside a word (0).
_BONUS = {2: 0.15, 1: 0.05, 0: 0.0}
_ENDS_CLAUSE = re.compile(r"(?:[，,、：:—]|\s)\s*$")


def segment_audio(
    waveform: np.ndarray,
    sample_rate: int,
    max_seconds: float = DEFAULT_MAX_SEGMENT_SECONDS,
    search_seconds: float = 5.0,
) -> list[tuple[int, int]]:
    """Cut ``[T]`` audio into consecutive spans ``(start, end)`` of at most ``max_seconds`` each.

    Audio no longer than ``max_seconds`` is one span.  Otherwise each cut goes at the quietest
    20 ms frame (lowest RMS) within the ``search_seconds`` before the limit, so spans end in pauses;
    the spans cover the audio exactly, without gaps or overlap.
    """
    max_seconds = check_float(max_seconds, "max_seconds", minimum=1.0)
    search_seconds = check_float(search_seconds, "search_seconds", minimum=0.0)
    sample_rate = check_int(sample_rate, "sample_rate", minimum=1)
    total = int(waveform.shape[-1])
    limit = int(max_seconds * sample_rate)
    frame = max(1, int(_FRAME_SECONDS * sample_rate))
    search = min(int(search_seconds * sample_rate), limit // 2)
    spans: list[tuple[int, int]] = []
    start = 0
    while total - start > limit:
        window_start = start + limit - search
        best = start + limit
        if search >= frame:
            window = np.asarray(waveform[window_start : start + limit], dtype=np.float64)
            frames = window[: len(window) // frame * frame].reshape(-1, frame)
            energy = np.sqrt(np.mean(frames * frames, axis=1))
            # The quietest frame; among equals the latest (longest span).  Cut in its middle.
            quietest = len(energy) - 1 - int(np.argmin(energy[::-1]))
            best = window_start + quietest * frame + frame // 2
        spans.append((start, best))
        start = best
    spans.append((start, total))
    return spans


def _pieces(text: str) -> list[str]:
    """``text`` cut after sentence ends, clause ends and spaces (delimiters kept; concatenation is ``text``)."""
    pieces: list[str] = []
    for sentence in _split_after(text, _SENTENCE_END):
        pieces.extend(_split_after(sentence, _CLAUSE_END))
    return pieces


def _split_after(text: str, pattern: re.Pattern[str]) -> list[str]:
    out, start = [], 0
    for match in pattern.finditer(text):
        if match.end() > start:
            out.append(text[start : match.end()])
            start = match.end()
    if start < len(text):
        out.append(text[start:])
    return out


def _strength(piece: str) -> int:
    """How good a cut after ``piece`` is: 2 at a sentence end, 1 at a clause end or space, 0 inside a word."""
    if _ENDS_SENTENCE.search(piece):
        return 2
    return 1 if _ENDS_CLAUSE.search(piece) else 0


def share_text(text: str, durations: Sequence[float]) -> list[str]:
    """Share ``text`` out over consecutive audio spans of the given ``durations``, proportionally.

    Each cut goes at the boundary nearest the proportional position, preferring sentence ends, then
    clause ends and spaces, then any character; every span gets some text when the text has at least
    as many characters as there are spans.  The pieces, concatenated, give ``text`` back (outer
    whitespace of each piece stripped).
    """
    count = len(durations)
    if count <= 1:
        return [text.strip()] if count == 1 else []
    total_seconds = float(sum(durations))
    characters = len(text)
    # Candidate cut positions (character offsets) with their strength.
    candidates: dict[int, int] = {}
    offset = 0
    for piece in _pieces(text):
        offset += len(piece)
        candidates[offset] = max(candidates.get(offset, 0), _strength(piece))
    for position in range(1, characters):
        candidates.setdefault(position, 0)
    candidates.pop(characters, None)
    cuts: list[int] = []
    elapsed = 0.0
    previous = 0
    for index in range(count - 1):
        elapsed += float(durations[index])
        target = characters * elapsed / total_seconds if total_seconds > 0 else characters * (index + 1) / count
        remaining = count - 1 - index  # cuts still to place after this one need room
        allowed = [p for p in candidates if previous < p <= characters - remaining]
        if not allowed:
            cuts.append(previous)
            continue

        best = min(allowed, key=lambda p, t=target: (abs(p - t) - _BONUS[candidates[p]] * characters, abs(p - t)))
        cuts.append(best)
        previous = best
    bounds = [0, *cuts, characters]
    return [text[bounds[i] : bounds[i + 1]].strip() for i in range(count)]


def split_tagged_like(tagged: str, plain_pieces: Sequence[str]) -> list[str]:
    """Cut ``tagged`` (a transcript with ``[Tag]`` insertions) where ``plain_pieces`` cut the plain transcript.

    Characters are counted without tags and whitespace, so ``"a b[Uhm] c"`` cut like ``["a b", "c"]``
    gives ``["a b[Uhm]", "c"]`` (a tag stays with the text before it).  When the tagged text has
    different words, the cuts are placed proportionally to the pieces' lengths.
    """
    if len(plain_pieces) <= 1:
        return [tagged.strip()] if plain_pieces else []
    lengths = [len("".join(piece.split())) for piece in plain_pieces]
    tagged_chars = len("".join(_TAG.sub("", tagged).split()))
    scale = tagged_chars / max(1, sum(lengths))
    targets = []
    running = 0
    for length in lengths[:-1]:
        running += length
        targets.append(round(running * scale))
    # Walk the tagged text, counting visible characters; cut after the target count, after trailing tags.
    cuts: list[int] = []
    seen = 0
    position = 0
    target_index = 0
    while position < len(tagged) and target_index < len(targets):
        match = _TAG.match(tagged, position)
        if match:
            position = match.end()
            continue
        if not tagged[position].isspace():
            seen += 1
        position += 1
        while target_index < len(targets) and seen >= targets[target_index]:
            end = position
            while (match := _TAG.match(tagged, end)) is not None:
                end = match.end()
            cuts.append(end)
            target_index += 1
    while len(cuts) < len(targets):
        cuts.append(len(tagged))
    bounds = [0, *cuts, len(tagged)]
    return [tagged[bounds[i] : bounds[i + 1]].strip() for i in range(len(plain_pieces))]


def join_audio(pieces: Sequence[torch.Tensor], sample_rate: int, crossfade_seconds: float = 0.01) -> torch.Tensor:
    """Concatenate ``[1, n]`` waveforms, cross-fading ``crossfade_seconds`` at each joint (equal-power).

    The result has ``sum(lengths) - (pieces - 1) * overlap`` samples, where the overlap is the
    cross-fade length capped by the shorter neighbour.
    """
    check_float(crossfade_seconds, "crossfade_seconds", minimum=0.0)
    pieces = [piece for piece in pieces if piece.shape[-1] > 0]
    if not pieces:
        return torch.zeros(1, 0)
    out = pieces[0].clone()
    fade = int(crossfade_seconds * sample_rate)
    for piece in pieces[1:]:
        overlap = min(fade, out.shape[-1], piece.shape[-1])
        if overlap == 0:
            out = torch.cat([out, piece], dim=-1)
            continue
        ramp = torch.linspace(0.0, math.pi / 2, overlap, dtype=out.dtype)
        mixed = out[..., -overlap:] * torch.cos(ramp) + piece[..., :overlap] * torch.sin(ramp)
        out = torch.cat([out[..., :-overlap], mixed, piece[..., overlap:]], dim=-1)
    return out


class StreamedJoin:
    """:func:`join_audio` for pieces that arrive chunk by chunk: what it returns, concatenated, equals
    ``join_audio(pieces, sample_rate, crossfade_seconds)`` sample for sample.

    Use: ``start_piece()``, then ``feed(chunk)`` for each chunk of the piece, ``end_piece()``; after the
    last piece ``close()``.  Each call returns the audio that became final (``[1, n]``, maybe empty).  The
    last ``crossfade`` samples of the output so far are held back (the next piece may fade into them), and
    a new piece's first ``crossfade`` samples are held until they are known (the fade is capped by the
    shorter neighbour), so a stream is delayed by at most 10 ms.
    """

    def __init__(self, sample_rate: int, crossfade_seconds: float = 0.01) -> None:
        check_float(crossfade_seconds, "crossfade_seconds", minimum=0.0)
        self.fade = int(crossfade_seconds * check_int(sample_rate, "sample_rate", minimum=1))
        self._held = torch.zeros(1, 0)  # the end of the output so far, not returned yet
        self._out_samples = 0  # samples of the output so far (returned + held)
        self._head: torch.Tensor | None = None  # the current piece's start while it is not faded in yet
        self._fade_pending = False  # the current piece must still be faded into the output so far

    def start_piece(self) -> None:
        """A new piece begins (it fades into the previous output, if any)."""
        self._head = torch.zeros(1, 0)
        self._fade_pending = self._out_samples > 0

    def feed(self, chunk: torch.Tensor) -> torch.Tensor:
        """The next ``[1, n]`` samples of the current piece."""
        if self._head is None:
            raise RuntimeError("StreamedJoin.feed() before start_piece()")
        if not self._fade_pending:
            return self._append(chunk)
        self._head = torch.cat([self._head, chunk.to(self._held.dtype)], dim=-1)
        if self._head.shape[-1] < self.fade:
            return torch.zeros(1, 0)
        return self._fade_in()

    def end_piece(self) -> torch.Tensor:
        """The current piece is complete."""
        out = self._fade_in() if self._fade_pending and self._head is not None and self._head.shape[-1] else None
        self._head = None
        self._fade_pending = False
        return out if out is not None else torch.zeros(1, 0)

    def close(self) -> torch.Tensor:
        """The held-back end of the output."""
        held, self._held = self._held, torch.zeros(1, 0)
        return held

    def _fade_in(self) -> torch.Tensor:
        head, self._head = self._head, torch.zeros(1, 0)
        self._fade_pending = False
        overlap = min(self.fade, self._out_samples, head.shape[-1])
        if overlap == 0:
            return self._append(head)
        held = self._held
        ramp = torch.linspace(0.0, math.pi / 2, overlap, dtype=held.dtype)
        mixed = held[..., -overlap:] * torch.cos(ramp) + head[..., :overlap] * torch.sin(ramp)
        self._held = held[..., :-overlap]
        self._out_samples -= overlap
        return self._append(torch.cat([mixed, head[..., overlap:]], dim=-1))

    def _append(self, chunk: torch.Tensor) -> torch.Tensor:
        if chunk.shape[-1] == 0:
            return torch.zeros(1, 0)
        self._out_samples += chunk.shape[-1]
        held = torch.cat([self._held, chunk.to(self._held.dtype)], dim=-1)
        keep = min(self.fade, held.shape[-1])
        self._held = held[..., held.shape[-1] - keep :]
        return held[..., : held.shape[-1] - keep]


def split_clone_text(text: str, max_chars: int = DEFAULT_MAX_CLONE_CHARS) -> list[str]:
    """Split clone text at sentence ends into pieces of at most ``max_chars`` characters (greedy packing).

    An over-long sentence is split at clause breaks, then cut hard.  A leading language prefix
    (``[Sichuanese]`` ...) applies to all of the text, so it starts every piece (not counted).
    """
    check_int(max_chars, "max_chars", minimum=1)
    prefix = next((f"[{name}]" for name in LANGUAGES if text.startswith(f"[{name}]")), "")
    body = text[len(prefix) :].strip()
    if len(body) <= max_chars:
        return [prefix + body]
    units: list[str] = []
    for sentence in _split_after(body, _SENTENCE_END):
        if len(sentence) <= max_chars:
            units.append(sentence)
            continue
        for clause in _split_after(sentence, _CLAUSE_END):
            units.extend(clause[i : i + max_chars] for i in range(0, len(clause), max_chars))
    packed: list[str] = []
    for unit in units:
        if packed and len(packed[-1]) + len(unit) <= max_chars:
            packed[-1] += unit
        else:
            packed.append(unit)
    return [prefix + piece.strip() for piece in packed if piece.strip()]
