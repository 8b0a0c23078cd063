"""The 2:3 interleave of vq02 and vq06 codes, LLM audio ids and the ``<audio_N>`` string form.

Code spaces (reference §1.5 / §3.4):

- vq02 (linguistic) code ``c`` in 0..1023   -> audio token ``N = c``        -> LLM id ``65536 + c``
- vq06 (semantic)   code ``c`` in 0..4095   -> audio token ``N = 1024 + c`` -> LLM id ``65536 + 1024 + c``

Interleaving: ``g = min(len(vq06) // 3, len(vq02) // 2)`` groups; group ``k`` is
``vq02[2k], vq02[2k+1], vq06[3k], vq06[3k+1], vq06[3k+2]``; codes that do not fill a group are dropped.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from ..errors import AudioTokenError
from ..llm.prompts import audio_codes_to_ids, audio_ids_to_codes, format_audio_tokens, parse_audio_tokens
from ..llm.text_tokenizer import AUDIO_TOKEN_OFFSET, NUM_LINGUISTIC_CODES, NUM_SEMANTIC_CODES

__all__ = [
    "AUDIO_ID_OFFSET",
    "LINGUISTIC_CODEBOOK_SIZE",
    "SEMANTIC_CODEBOOK_SIZE",
    "GROUP_LINGUISTIC",
    "GROUP_SEMANTIC",
    "AUDIO_TOKENS_PER_SECOND",
    "GROUP_SECONDS",
    "max_audio_tokens",
    "audio_seconds_for",
    "interleave",
    "deinterleave",
    "ids_to_string",
    "string_to_ids",
    "compare_ids",
]

AUDIO_ID_OFFSET = AUDIO_TOKEN_OFFSET
LINGUISTIC_CODEBOOK_SIZE = NUM_LINGUISTIC_CODES
SEMANTIC_CODEBOOK_SIZE = NUM_SEMANTIC_CODES
GROUP_LINGUISTIC = 2
GROUP_SEMANTIC = 3
_SEMANTIC_ID_OFFSET = AUDIO_ID_OFFSET + LINGUISTIC_CODEBOOK_SIZE
#: Audio covered by one 2+3 group: two vq02 codes at 16.67 Hz = three vq06 codes at 25 Hz = 0.12 s.
GROUP_SECONDS = 0.12
#: Interleaved audio tokens per second of audio (5 per 0.12 s group).
AUDIO_TOKENS_PER_SECOND = (GROUP_LINGUISTIC + GROUP_SEMANTIC) / GROUP_SECONDS


def max_audio_tokens(seconds: float) -> int:
    """Upper bound on the interleaved tokens of ``seconds`` of audio (whole 2+3 groups; trimming only lowers it).

    Lets callers refuse audio that cannot fit a model's context from its duration alone, before tokenizing.
    """
    return (GROUP_LINGUISTIC + GROUP_SEMANTIC) * math.floor(seconds / GROUP_SECONDS + 1e-9)


def audio_seconds_for(tokens: int) -> float:
    """Longest audio whose interleaved tokens fit in ``tokens`` (whole 0.12 s groups): :func:`max_audio_tokens`'s
    inverse, for messages that say how long a clip may be."""
    return max(0, tokens) // (GROUP_LINGUISTIC + GROUP_SEMANTIC) * GROUP_SECONDS


def _check_codes(codes: Sequence[int], size: int, name: str) -> None:
    for position, code in enumerate(codes):
        if not 0 <= int(code) < size:
            raise AudioTokenError(f"{name} code {code} at position {position} is outside 0..{size - 1}")


def interleave(vq02: Sequence[int], vq06: Sequence[int]) -> list[int]:
    """Interleave raw vq02 and vq06 codes 2:3 into LLM ids (``65536 + N``); leftovers are dropped."""
    _check_codes(vq02, LINGUISTIC_CODEBOOK_SIZE, "vq02")
    _check_codes(vq06, SEMANTIC_CODEBOOK_SIZE, "vq06")
    groups = min(len(vq06) // GROUP_SEMANTIC, len(vq02) // GROUP_LINGUISTIC)
    ids: list[int] = []
    for k in range(groups):
        ids.extend(AUDIO_ID_OFFSET + int(c) for c in vq02[GROUP_LINGUISTIC * k : GROUP_LINGUISTIC * (k + 1)])
        ids.extend(_SEMANTIC_ID_OFFSET + int(c) for c in vq06[GROUP_SEMANTIC * k : GROUP_SEMANTIC * (k + 1)])
    return ids


def deinterleave(ids: Sequence[int]) -> tuple[list[int], list[int]]:
    """Split interleaved LLM ids back into raw ``(vq02, vq06)`` codes, checking the 2:3 group order."""
    group = GROUP_LINGUISTIC + GROUP_SEMANTIC
    if len(ids) % group:
        raise AudioTokenError(f"{len(ids)} audio ids are not a whole number of 2+3 groups (multiple of {group})")
    vq02: list[int] = []
    vq06: list[int] = []
    for position, token_id in enumerate(ids):
        slot = position % group
        if slot < GROUP_LINGUISTIC:
            code = int(token_id) - AUDIO_ID_OFFSET
            if not 0 <= code < LINGUISTIC_CODEBOOK_SIZE:
                raise AudioTokenError(
                    f"id {token_id} at position {position} should be a vq02 id in "
                    f"{AUDIO_ID_OFFSET}..{_SEMANTIC_ID_OFFSET - 1} (slot {slot} of a 2+3 group)"
                )
            vq02.append(code)
        else:
            code = int(token_id) - _SEMANTIC_ID_OFFSET
            if not 0 <= code < SEMANTIC_CODEBOOK_SIZE:
                raise AudioTokenError(
                    f"id {token_id} at position {position} should be a vq06 id in {_SEMANTIC_ID_OFFSET}.."
                    f"{_SEMANTIC_ID_OFFSET + SEMANTIC_CODEBOOK_SIZE - 1} (slot {slot} of a 2+3 group)"
                )
            vq06.append(code)
    return vq02, vq06


def ids_to_string(ids: Sequence[int]) -> str:
    """LLM audio ids -> the chat string ``<audio_N>...`` (``N = id - 65536``, no separators)."""
    return format_audio_tokens(audio_ids_to_codes(ids))


def string_to_ids(text: str) -> list[int]:
    """Parse a ``<audio_N>...`` string back into LLM ids; anything else in the string is an error."""
    return audio_codes_to_ids(parse_audio_tokens(text))


def compare_ids(ids: Sequence[int], reference: Sequence[int]) -> tuple[int, int]:
    """How ``ids`` differ from ``reference`` (e.g. a streamed tokenization from the offline one).

    Returns:
        ``(positions that differ over the common length, len(ids) - len(reference))``.
    """
    common = min(len(ids), len(reference))
    mismatched = sum(a != b for a, b in zip(ids[:common], reference[:common], strict=True))
    return mismatched, len(ids) - len(reference)
