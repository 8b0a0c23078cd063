"""Running ``generate`` in a worker thread while the caller consumes a streamer, with cancellation."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import torch
from transformers import StoppingCriteria, StoppingCriteriaList

__all__ = ["BackgroundFeed", "BackgroundGeneration", "StopWhenSet", "seeded_rng"]


@contextlib.contextmanager
def seeded_rng(seed: int | None, cuda_devices: Sequence[int] = ()) -> Iterator[None]:
    """Inside the block, torch's random state (CPU and ``cuda_devices``) is seeded with ``seed``; it is restored after.

    ``seed=None`` leaves the global random state alone (nothing is forked), which is how
    ``model.generate`` samples when no per-request seed is asked for.
    """
    if seed is None:
        yield
        return
    with torch.random.fork_rng(devices=list(cuda_devices)):
        torch.manual_seed(seed)
        yield


class StopWhenSet(StoppingCriteria):
    """Stops ``generate`` at the next token once any of ``events`` is set (used for cancellation)."""

    def __init__(self, *events: threading.Event) -> None:
        self.events = events

    @property
    def event(self) -> threading.Event:
        """The first event (the one of the single-event form ``StopWhenSet(event)``)."""
        return self.events[0]

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs) -> torch.BoolTensor:
        stop = any(event.is_set() for event in self.events)
        return torch.full((input_ids.shape[0],), stop, dtype=torch.bool, device=input_ids.device)


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
        cancel: set this event to stop early (a fresh one is created if not given); leaving the block sets it.
        stop_events: more events that stop the worker at the next token when set; they are only read (a
            caller's own cancellation event goes here, so that leaving the block does not set it).
        thread_name: name of the worker thread (useful to check for leaks).
        seed: seed the sampler with this in the worker (:func:`seeded_rng`; ``None``: the global random state).
        seed_devices: the CUDA device indices whose random state ``seed`` sets (the model's).
        **generate_kwargs: passed on to ``generate``.
    """

    def __init__(
        self,
        model: Any,
        input_ids: torch.Tensor,
        streamer: Any,
        cancel: threading.Event | None = None,
        thread_name: str = "stepaudio-generate",
        stop_events: Iterable[threading.Event | None] = (),
        seed: int | None = None,
        seed_devices: Sequence[int] = (),
        **generate_kwargs: Any,
    ) -> None:
        self.cancel = cancel if cancel is not None else threading.Event()
        self._failure: list[BaseException] = []
        events = [self.cancel, *(event for event in stop_events if event is not None)]

        def run() -> None:
            try:
                with torch.inference_mode(), seeded_rng(seed, seed_devices):
                    model.generate(
                        input_ids,
                        attention_mask=torch.ones_like(input_ids),
                        streamer=streamer,
                        stopping_criteria=StoppingCriteriaList([StopWhenSet(*events)]),
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
        if threading.current_thread() is not self._worker:  # an abandoned consumer may be finalised by the worker
            self._worker.join()
        if self._failure and exc is None:
            raise self._failure[0]


class BackgroundFeed:
    """``with BackgroundFeed(ids, streamer):`` consume ``streamer`` in the block while a worker feeds it ``ids``.

    The worker iterates ``ids`` (a backend's :meth:`~stepaudio.llm.backends.GenerationBackend.stream_ids`)
    and puts each id into ``streamer`` as a one-element tensor, as ``generate`` does; it then closes
    ``ids`` and calls ``streamer.end()`` (also when it fails, so a consumer iterating over the streamer
    never hangs).  Leaving the block stops the worker at the next id (it closes ``ids``, which stops the
    backend), waits for it, and re-raises an exception the worker hit.  The consumer of the streamer
    keeps the streamer's own semantics (e.g. ``TextIteratorStreamer``'s ``timeout``).

    Args:
        ids: the generated ids, iterated in the worker thread.
        streamer: a transformers streamer (``put`` / ``end``) that has already seen the prompt, if it skips one.
        thread_name: name of the worker thread (useful to check for leaks).
    """

    def __init__(self, ids: Iterator[int], streamer: Any, thread_name: str = "stepaudio-feed") -> None:
        self.stop = threading.Event()
        self._failure: list[BaseException] = []

        def run() -> None:
            try:
                for token in ids:
                    streamer.put(torch.tensor([token]))
                    if self.stop.is_set():
                        break
            except BaseException as error:  # re-raised in the consumer's thread by __exit__
                self._failure.append(error)
            finally:
                try:
                    close = getattr(ids, "close", None)
                    if close is not None:
                        close()
                except BaseException as error:
                    self._failure.append(error)
                streamer.end()

        self._worker = threading.Thread(target=run, name=thread_name, daemon=True)

    def __enter__(self) -> BackgroundFeed:
        self._worker.start()
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        self.stop.set()  # a no-op after a normal end; stops the worker at the next id if the consumer left early
        if threading.current_thread() is not self._worker:  # an abandoned consumer may be finalised by the worker
            self._worker.join()
        if self._failure and exc is None:
            raise self._failure[0]
