"""Running ``generate`` in a worker thread while the caller consumes a streamer, with cancellation."""

from __future__ import annotations

import threading
from typing import Any

import torch
from transformers import StoppingCriteria, StoppingCriteriaList

__all__ = ["BackgroundGeneration", "StopWhenSet"]


class StopWhenSet(StoppingCriteria):
    """Stops ``generate`` at the next token once ``event`` is set (used for cancellation)."""

    def __init__(self, event: threading.Event) -> None:
        self.event = event

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs) -> torch.BoolTensor:
        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device)


class BackgroundGeneration:
    """``with BackgroundGeneration(model, input_ids, streamer, ...):`` consume ``streamer`` in the block.

    ``model.generate`` runs in a daemon thread and pushes tokens into ``streamer``.  Leaving the block
    (normally, by an exception, or because the consuming generator was closed) sets ``cancel`` so the
    worker stops within one token, waits for it, and re-raises an exception the worker hit.

    Args:
        model: a transformers model with ``generate``.
        input_ids: ``[1, L]`` prompt ids on the model's input device.
        streamer: receives the tokens; its ``end()`` is also called if the worker fails, so a consumer
            iterating over it never hangs.
        cancel: set this event to stop early (a fresh one is created if not given).
        thread_name: name of the worker thread (useful to check for leaks).
        **generate_kwargs: passed on to ``generate``.
    """

    def __init__(
        self,
        model: Any,
        input_ids: torch.Tensor,
        streamer: Any,
        cancel: threading.Event | None = None,
        thread_name: str = "stepaudio-generate",
        **generate_kwargs: Any,
    ) -> None:
        self.cancel = cancel if cancel is not None else threading.Event()
        self._failure: list[BaseException] = []

        def run() -> None:
            try:
                with torch.inference_mode():
                    model.generate(
                        input_ids,
                        attention_mask=torch.ones_like(input_ids),
                        streamer=streamer,
                        stopping_criteria=StoppingCriteriaList([StopWhenSet(self.cancel)]),
                        **generate_kwargs,
                    )
            except BaseException as error:  # re-raised in the consumer's thread by __exit__
                self._failure.append(error)
                streamer.end()

        self._worker = threading.Thread(target=run, name=thread_name, daemon=True)

    def __enter__(self) -> BackgroundGeneration:
        self._worker.start()
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        self.cancel.set()  # a no-op after a normal end; stops the worker if the consumer left early
        self._worker.join()
        if self._failure and exc is None:
            raise self._failure[0]
