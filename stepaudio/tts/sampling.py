"""Sampling rules of the TTS-3B audio-token LM, as pure torch functions and transformers processors.

The functions are shared by every generation backend: the transformers ``LogitsProcessor`` classes
below call them, and so does the vLLM logits processor (``stepaudio.vllm.logits_processors``), so
both engines forbid exactly the same ids.
"""

from __future__ import annotations

import torch
from transformers import LogitsProcessor

from ..llm.text_tokenizer import AUDIO_TOKEN_OFFSET, EOT_ID, NUM_AUDIO_CODES

__all__ = [
    "RepetitionAwareLogitsProcessor",
    "audio_tokens_only_mask",
    "forbid_repeated_last_",
    "last_tokens",
    "repetition_blocked",
]


def audio_tokens_only_mask(
    vocab_size: int, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """The additive mask ``[vocab_size]`` that lets only ``<audio_N>`` ids (65536..70655) and ``<|EOT|>`` through.

    Allowed ids hold ``0.0``, every other id ``-inf``; add it to a row of logits.
    """
    mask = torch.full((vocab_size,), float("-inf"), dtype=dtype, device=device)
    mask[AUDIO_TOKEN_OFFSET : AUDIO_TOKEN_OFFSET + NUM_AUDIO_CODES] = 0.0
    mask[EOT_ID] = 0.0
    return mask


def repetition_blocked(
    recent_ids: torch.Tensor,
    window: int | torch.Tensor,
    max_ratio: float | torch.Tensor,
    valid: torch.Tensor | None = None,
) -> torch.Tensor:
    """Which rows must not repeat their most recent id (upstream's anti-loop rule of the TTS-3B).

    Args:
        recent_ids: ``[batch, width]`` the last ids of each sequence, the most recent in the last column.
        window: the rule's window ``w`` (an int, or one per row as a ``[batch]`` integer tensor).
        max_ratio: the rule's ratio (a float, or one per row as a ``[batch]`` float32 tensor).
        valid: optional ``[batch, width]`` bool: which columns belong to the row's window (a sequence
            shorter than ``w``, or a row whose ``w`` is narrower than ``width``, has invalid columns).

    Returns:
        ``[batch]`` bool: the most recent id occurs more than ``max_ratio * w`` times in the window
        (computed as ``count / w > max_ratio``, exactly as the transformers processor always did).
    """
    last = recent_ids[:, -1]
    hits = recent_ids == last[:, None]
    if valid is not None:
        hits = hits & valid
    repeats = hits.sum(dim=-1)
    return repeats / window > max_ratio


def forbid_repeated_last_(
    logits: torch.Tensor,
    recent_ids: torch.Tensor,
    window: int | torch.Tensor,
    max_ratio: float | torch.Tensor,
    valid: torch.Tensor | None = None,
) -> torch.Tensor:
    """Set ``logits[row, last id]`` to ``-inf`` in place for every row :func:`repetition_blocked` selects.

    Works without a host-device synchronisation (no ``nonzero``), so it suits an engine's sampler.
    Returns ``logits``.
    """
    blocked = repetition_blocked(recent_ids, window, max_ratio, valid)
    last = recent_ids[:, -1:].to(torch.int64)
    current = logits.gather(1, last)
    logits.scatter_(1, last, torch.where(blocked[:, None], torch.full_like(current, float("-inf")), current))
    return logits


def last_tokens(token_ids: torch.Tensor, lengths: torch.Tensor, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The last ``width`` ids of each row's first ``lengths[row]`` ids, and which of them exist.

    Args:
        token_ids: ``[batch, capacity]`` ids per row (an engine's token table).
        lengths: ``[batch]`` how many ids of each row are real (at least 1).
        width: how many trailing ids to take.

    Returns:
        ``(ids, valid)``, both ``[batch, width]``: columns before the start of a short sequence are
        ``False`` in ``valid`` (their id is a copy of position 0 and must not be counted).
    """
    offsets = torch.arange(width - 1, -1, -1, device=token_ids.device)
    positions = lengths.to(torch.int64)[:, None] - 1 - offsets[None, :]
    valid = positions >= 0
    ids = token_ids.gather(1, positions.clamp(min=0))
    return ids, valid


class RepetitionAwareLogitsProcessor(LogitsProcessor):
    """Forbid the most recent token when it already fills too much of the recent window.

    Upstream's rule: look at the last ``window`` (10) ids of the whole sequence; if the most recent id
    occurs there more than ``max_ratio * window`` times (more than once, for 0.1), its logit becomes
    ``-inf`` for this step.  This stops the audio LM from looping on one code.
    """

    def __init__(self, window: int = 10, max_ratio: float = 0.1) -> None:
        if window < 1:
            raise ValueError(f"window must be at least 1, got {window}")
        self.window = window
        self.max_ratio = max_ratio

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        recent = input_ids[:, -self.window :]
        blocked = repetition_blocked(recent, self.window, self.max_ratio)
        if blocked.any():
            last = recent[:, -1]
            rows = blocked.nonzero(as_tuple=True)[0]
            scores = scores.clone()
            scores[rows, last[rows]] = float("-inf")
        return scores
