"""Dual-codebook token layout of the Step-Audio-EditX decoder: the LLM's mixed sequence -> time-aligned pairs.

The audio LLM (and the tokenizer) emit a *mixed* sequence in groups of five: two linguistic codes
(vq02, values 0..1023) followed by three semantic codes (vq06, values 1024..5119), all as
``LLM id - 65536``.  The decoder's embedding reads *time-aligned pairs* instead: each group becomes
three steps ``[vq02 or pad, vq06]`` (25 steps per second):

* column 0 = the two vq02 codes and then the vq02 pad id 1024;
* column 1 = the three vq06 codes plus one (1025..5120), so both columns index one table of
  5121 rows (``DualCodebookEmbedding``: rows 0..1023 vq02, 1024 pad, 1025..5120 vq06).

A trailing partial group is completed as the original does: missing vq02 slots with code 0 and
missing vq06 slots with code 1024 (vq06 code 0); the audio of that last group is not meaningful.

A code of the other codebook in a slot (a misaligned sequence, which a trained LM practically never
emits) is decoded as the original decodes it - both columns index the same table, so it is a valid
row - and logged once per sequence at warning level; only values outside 0..5119 are refused.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch

from ..errors import AudioTokenError

logger = logging.getLogger(__name__)

__all__ = [
    "AUDIO_ID_OFFSET",
    "GROUP_SIZE",
    "STEPS_PER_GROUP",
    "VQ02_PAD",
    "VQ02_SIZE",
    "VQ06_SIZE",
    "check_mixed_tokens",
    "first_misaligned",
    "log_misaligned",
    "mixed_to_dual",
    "dual_steps_for",
]

AUDIO_ID_OFFSET = 65536  #: LLM id of audio code 0
VQ02_SIZE = 1024  #: linguistic codebook size (codes 0..1023)
VQ06_SIZE = 4096  #: semantic codebook size (codes 1024..5119 in the mixed sequence)
GROUP_SIZE = 5  #: mixed tokens per group (2 vq02 + 3 vq06) = 120 ms
STEPS_PER_GROUP = 3  #: time-aligned steps per group
VQ02_PAD = 1024  #: embedding row of the empty third vq02 slot
_VQ02_SLOTS = 2


def dual_steps_for(num_mixed: int) -> int:
    """Time-aligned steps made from ``num_mixed`` mixed tokens (a partial group counts as a whole one)."""
    return -(-num_mixed // GROUP_SIZE) * STEPS_PER_GROUP


def first_misaligned(values: Sequence[int], start: int = 0) -> int | None:
    """Index of the first code of the wrong codebook for its slot (vq02 in slots 0-1, vq06 in 2-4), or ``None``."""
    for index, value in enumerate(values):
        if ((start + index) % GROUP_SIZE < _VQ02_SLOTS) != (value < VQ02_SIZE):
            return index
    return None


def log_misaligned(values: Sequence[int], what: str, start: int = 0) -> bool:
    """Log the first code of the wrong codebook for its slot (at warning level); return whether there was one."""
    index = first_misaligned(values, start)
    if index is None:
        return False
    position = start + index
    slot = "vq02" if position % GROUP_SIZE < _VQ02_SLOTS else "vq06"
    logger.warning(
        "%s[%d] = %d sits in a %s slot (position %d, slot %d of 5) but is a code of the other codebook: the "
        "sequence is not in groups of 2 vq02 + 3 vq06 codes; decoded as the original does (that audio is not "
        "meaningful)",
        what,
        index,
        values[index],
        slot,
        position,
        position % GROUP_SIZE,
    )
    return True


def check_mixed_tokens(tokens: object, what: str, start: int = 0, warn: bool = True) -> list[int]:
    """``tokens`` ([T] or [1, T] integers, mixed 2:3 layout) as a list of ints; refused with a precise message.

    Args:
        tokens: a list, numpy array or tensor of audio code values (LLM id - 65536).
        what: the argument's name, for messages.
        start: position of the first token in its utterance (a stream piece starts mid-sequence), which
            decides which slots must hold vq02 and which vq06 codes.
        warn: log a misaligned code (a stream that has already warned for its utterance passes ``False``).

    Raises:
        AudioTokenError: wrong shape or dtype, an LLM id (>= 65536) instead of a code, or a value outside
            0..5119.  A code of the wrong codebook for its slot is only logged (see the module doc).
    """
    tensor = torch.as_tensor(np.asarray(tokens) if not isinstance(tokens, torch.Tensor) else tokens)
    if tensor.dim() == 2 and tensor.shape[0] == 1:
        tensor = tensor[0]
    if tensor.dim() != 1:
        raise AudioTokenError(f"{what}: expected audio codes of shape [T] or [1, T], got {tuple(tensor.shape)}")
    if tensor.numel() and (tensor.is_floating_point() or tensor.is_complex() or tensor.dtype == torch.bool):
        raise AudioTokenError(f"{what}: expected integer audio codes, got dtype {tensor.dtype}")
    values = tensor.long().tolist()
    for index, value in enumerate(values):
        if value >= AUDIO_ID_OFFSET:
            raise AudioTokenError(
                f"{what}[{index}] = {value} is an LLM token id; pass audio codes (subtract {AUDIO_ID_OFFSET})"
            )
        if not 0 <= value < VQ02_SIZE + VQ06_SIZE:
            raise AudioTokenError(
                f"{what}[{index}] = {value} is not an audio code 0..{VQ02_SIZE + VQ06_SIZE - 1} "
                f"(vq02 0..{VQ02_SIZE - 1}, vq06 {VQ02_SIZE}..{VQ02_SIZE + VQ06_SIZE - 1})"
            )
    if warn:
        log_misaligned(values, what, start)
    return values


def mixed_to_dual(tokens: Sequence[int]) -> torch.Tensor:
    """Mixed codes (length any; a partial last group is completed) -> embedding rows [steps, 2] int64."""
    values = list(tokens)
    missing = (-len(values)) % GROUP_SIZE
    if missing:
        # complete the group: vq02 slots with code 0, vq06 slots with vq06 code 0 (value 1024)
        filler = [0] * _VQ02_SLOTS + [VQ02_SIZE] * (GROUP_SIZE - _VQ02_SLOTS)
        values += filler[GROUP_SIZE - missing :]
    groups = torch.tensor(values, dtype=torch.long).reshape(-1, GROUP_SIZE)
    vq02 = torch.cat([groups[:, :_VQ02_SLOTS], torch.full((groups.shape[0], 1), VQ02_PAD)], dim=1)
    vq06 = groups[:, _VQ02_SLOTS:] + 1
    return torch.stack([vq02.reshape(-1), vq06.reshape(-1)], dim=1)
