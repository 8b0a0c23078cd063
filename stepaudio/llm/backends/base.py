"""The contract every Step-1 generation backend fulfils (transformers, static-cache, vLLM, remote server).

A backend turns prompt token ids (text ids and ``<audio_N>`` ids, 65536+) into generated token ids.
Everything around it (prompt rendering, detokenisation, audio decoding) stays in ``StepAudioChat`` and
``StepAudioTTS``, so every backend sees exactly the same prompts and the callers see the same ids.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from ..text_tokenizer import EOT_ID

__all__ = ["GenerationBackend", "SamplingSettings", "TTS_REPETITION_WINDOW", "TTS_REPETITION_MAX_RATIO"]

#: The TTS-3B anti-loop rule of upstream: over the last 10 ids, a most recent id seen more than 10% of the time
#: (i.e. more than once) is forbidden for the next step.
TTS_REPETITION_WINDOW = 10
TTS_REPETITION_MAX_RATIO = 0.1


@dataclass(frozen=True)
class SamplingSettings:
    """How to pick the next token, the same for every backend.

    Attributes:
        max_new_tokens: most tokens to generate (the stop id included).
        do_sample: sample (True) or take the arg-max (False; temperature/top-k/top-p are then ignored).
        temperature: softmax temperature (> 0 when sampling).
        top_k: keep the ``top_k`` most likely ids (0: no top-k filter).
        top_p: nucleus filter (1.0: off).
        stop_token_ids: generation ends after one of these ids (it is yielded, then the stream ends).
        audio_tokens_only: TTS rule: only ``<audio_N>`` ids and ``<|EOT|>`` may be generated
            (see ``stepaudio.tts.tts.AudioTokensOnlyLogitsProcessor``).
        repetition_window: TTS rule: with a window ``w``, the most recent id is forbidden when it fills
            more than ``repetition_max_ratio * w`` of the last ``w`` ids of the whole sequence (prompt
            included); ``None`` turns the rule off (see ``stepaudio.tts.sampling``).
        repetition_max_ratio: see ``repetition_window``.
        seed: seed of the sampler for this request (``None``: the backend's global random state).
    """

    max_new_tokens: int
    do_sample: bool = True
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    stop_token_ids: tuple[int, ...] = (EOT_ID,)
    audio_tokens_only: bool = False
    repetition_window: int | None = None
    repetition_max_ratio: float = TTS_REPETITION_MAX_RATIO
    seed: int | None = None


class GenerationBackend(ABC):
    """Generates token ids for a prompt of token ids.

    Implementations must be safe to call from several threads (requests are serialised or batched
    inside), must stop within one token once ``cancel`` is set or the returned iterator is closed, and
    must raise (from the iterator) instead of ending silently when generation fails.
    """

    #: Short name shown in logs and errors (``transformers``, ``static``, ``vllm``, ``remote``).
    name: str = "backend"

    @property
    @abstractmethod
    def max_seq_len(self) -> int:
        """Longest prompt + generated sequence the model accepts."""

    @abstractmethod
    def stream_ids(
        self,
        prompt_ids: Sequence[int],
        settings: SamplingSettings,
        cancel: threading.Event | None = None,
    ) -> Iterator[int]:
        """Yield generated ids one by one (the prompt is not repeated); the stop id, if reached, is the last."""

    def generate_ids(self, prompt_ids: Sequence[int], settings: SamplingSettings) -> list[int]:
        """All generated ids at once (same ids as :meth:`stream_ids`)."""
        return list(self.stream_ids(prompt_ids, settings))

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release engines, threads or connections (a no-op by default)."""
