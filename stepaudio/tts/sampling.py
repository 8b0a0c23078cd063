"""Sampling rules of the TTS-3B audio-token LM."""

from __future__ import annotations

import torch
from transformers import LogitsProcessor

__all__ = ["RepetitionAwareLogitsProcessor"]


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
        last = recent[:, -1]
        repeats = (recent == last[:, None]).sum(dim=-1)
        blocked = repeats / self.window > self.max_ratio
        if blocked.any():
            rows = blocked.nonzero(as_tuple=True)[0]
            scores = scores.clone()
            scores[rows, last[rows]] = float("-inf")
        return scores
