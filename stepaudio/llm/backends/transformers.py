"""The reference backend: the Step-1 model's own transformers ``generate``, in this process.

It is the default of ``StepAudioChat`` and ``StepAudioTTS`` and reproduces exactly what they did before
backends existed: the same ``generate`` keyword arguments and logits processors, so the same seed
gives the same ids.  :meth:`TransformersBackend.generate_ids` calls ``generate`` in the caller's
thread; :meth:`TransformersBackend.stream_ids` runs it in a worker thread
(:class:`~stepaudio.llm.generation.BackgroundGeneration`) and hands the ids over through a queue.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from transformers import LogitsProcessorList
from transformers.generation.streamers import BaseStreamer

from ..generation import BackgroundGeneration, seeded_rng
from .base import GenerationBackend, SamplingSettings

__all__ = ["TTSRuleProcessors", "TransformersBackend"]


class TTSRuleProcessors:
    """The TTS rules of :class:`SamplingSettings` as logits processors, in the order ``generate`` applies a
    caller's list: audio ids only, then the repetition rule (shared by every backend that runs the model here).

    The one ``AudioTokensOnlyLogitsProcessor`` is made on first use and kept (it caches its mask per device).
    """

    def __init__(self) -> None:
        self._audio_only: Any = None

    def __call__(self, settings: SamplingSettings, model: Any) -> list[Any]:
        """The processors ``settings`` asks for (empty without TTS rules); ``model`` gives the vocabulary size."""
        processors: list[Any] = []
        if settings.audio_tokens_only:
            if self._audio_only is None:
                from ...tts.tts import AudioTokensOnlyLogitsProcessor

                self._audio_only = AudioTokensOnlyLogitsProcessor(model.config.vocab_size)
            processors.append(self._audio_only)
        if settings.repetition_window is not None:
            from ...tts.sampling import RepetitionAwareLogitsProcessor

            processors.append(RepetitionAwareLogitsProcessor(settings.repetition_window, settings.repetition_max_ratio))
        return processors


class _IdQueue(BaseStreamer):
    """A ``generate`` streamer that hands generated ids to another thread (the prompt, sent first, is skipped)."""

    def __init__(self) -> None:
        self.ids: queue.Queue[list[int] | None] = queue.Queue()
        self._prompt_seen = False

    def put(self, value: torch.Tensor) -> None:
        if not self._prompt_seen:
            self._prompt_seen = True
            return
        self.ids.put(value.reshape(-1).tolist())

    def end(self) -> None:
        self.ids.put(None)


class TransformersBackend(GenerationBackend):
    """Generates with ``model.generate`` (a loaded :class:`~stepaudio.llm.Step1ForCausalLM`).

    Args:
        model: the loaded Step-1 model (on its device(s), in eval mode).
        pad_token_id: passed to ``generate`` (the text tokenizer's pad id, as the callers always did).
        thread_name: name of the worker thread of :meth:`stream_ids` (to check for leaks).

    ``settings.seed`` seeds torch's random state for the request only (forked and restored, see
    :func:`~stepaudio.llm.generation.seeded_rng`); without it, sampling follows torch's global random
    state, so ``torch.manual_seed(s)`` before a call reproduces it, as before.
    """

    name = "transformers"

    def __init__(self, model: Any, *, pad_token_id: int | None = None, thread_name: str = "stepaudio-generate") -> None:
        if not callable(getattr(model, "generate", None)):
            from ...errors import InvalidArgumentError
            from ...validation import describe_value

            detail = f"must be a loaded Step-1 model with generate(), got {describe_value(model)}"
            raise InvalidArgumentError.about("model", detail, model)
        self.model = model
        self.pad_token_id = pad_token_id
        self.thread_name = thread_name
        self._tts_rules = TTSRuleProcessors()

    @property
    def max_seq_len(self) -> int:
        """``max_seq_len`` of the model's config.json."""
        return int(self.model.config.max_seq_len)

    @property
    def input_device(self) -> torch.device:
        """Where the prompt ids go (the embedding's device; the first GPU of a ``device_map`` model)."""
        return self.model.get_input_embeddings().weight.device

    def _cuda_devices(self) -> list[int]:
        """CUDA device indices holding the model's weights (whose random state a per-request seed sets)."""
        return sorted({p.device.index or 0 for p in self.model.parameters() if p.device.type == "cuda"})

    def generate_kwargs(self, settings: SamplingSettings) -> dict[str, Any]:
        """The ``generate`` keyword arguments of ``settings`` (the one place they are made).

        Greedy decoding passes no temperature/top-k/top-p (as ``StepAudioChat`` always did); the TTS
        rules become ``AudioTokensOnlyLogitsProcessor`` then ``RepetitionAwareLogitsProcessor``.
        """
        stops = list(settings.stop_token_ids)
        kwargs: dict[str, Any] = {
            "max_new_tokens": settings.max_new_tokens,
            "do_sample": settings.do_sample,
            "eos_token_id": stops[0] if len(stops) == 1 else stops,
            "pad_token_id": self.pad_token_id,
        }
        if settings.do_sample:
            kwargs.update(temperature=settings.temperature, top_k=settings.top_k, top_p=settings.top_p)
        processors = self._tts_rules(settings, self.model)
        if processors:
            kwargs["logits_processor"] = LogitsProcessorList(processors)
        return kwargs

    def _input_ids(self, prompt_ids: Sequence[int]) -> torch.Tensor:
        return torch.tensor([list(prompt_ids)], device=self.input_device)

    def generate_ids(self, prompt_ids: Sequence[int], settings: SamplingSettings) -> list[int]:
        """``model.generate`` in the calling thread; the generated ids (the stop id, if reached, last)."""
        input_ids = self._input_ids(prompt_ids)
        kwargs = self.generate_kwargs(settings)
        with torch.inference_mode(), seeded_rng(settings.seed, self._cuda_devices()):
            output = self.model.generate(input_ids, attention_mask=torch.ones_like(input_ids), **kwargs)
        return output[0, input_ids.shape[1] :].tolist()

    def stream_ids(
        self,
        prompt_ids: Sequence[int],
        settings: SamplingSettings,
        cancel: threading.Event | None = None,
    ) -> Iterator[int]:
        """``model.generate`` in a worker thread, its ids yielded here as they come.

        The worker stops at the next token once ``cancel`` is set (it is only read) or the iterator is
        closed; closing waits for the worker, and an error of the worker is raised here.
        """
        input_ids = self._input_ids(prompt_ids)
        kwargs = self.generate_kwargs(settings)
        return self._stream(input_ids, kwargs, settings.seed, cancel)

    def _stream(
        self, input_ids: torch.Tensor, kwargs: dict[str, Any], seed: int | None, cancel: threading.Event | None
    ) -> Iterator[int]:
        streamer = _IdQueue()
        generation = BackgroundGeneration(
            self.model,
            input_ids,
            streamer,
            thread_name=self.thread_name,
            stop_events=(cancel,),
            seed=seed,
            seed_devices=self._cuda_devices() if seed is not None else (),
            **kwargs,
        )
        with generation:
            while (ids := streamer.ids.get()) is not None:
                yield from ids
