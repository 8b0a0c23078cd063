"""``WorkQueue``: a bounded queue in front of the model work, run on worker threads off the event loop.

Every request that needs a model (speech, chat, transcription) is one *job*.  At most ``workers`` jobs
run at a time (default 1: the models are shared and the device does one thing at a time); up to
``max_queued`` more wait in FIFO order; a request beyond that is refused at once with 429
(:class:`~stepaudio.server.errors.QueueFullError`) instead of piling up.

A job gets a ``threading.Event`` that is set when its client has gone (a closed stream, a cancelled
request): a job that has not started is then skipped, and a running one should stop at its next
token or chunk.  A streaming job hands its pieces to the event loop through ``emit`` as it makes them;
the buffer is not bounded, so a slow client never holds a worker (the model does not wait for it).

Neither model is batched: Step-Audio-Chat and Step-Audio-TTS-3B generate one sequence per call in
this library, so concurrent requests queue here rather than share a forward pass.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

from .errors import QueueFullError

logger = logging.getLogger(__name__)

__all__ = ["JobCancelled", "WorkQueue", "WorkStream"]

T = TypeVar("T")

#: A streaming job: ``producer(emit, cancelled)`` calls ``emit(item)`` for every piece it makes.
Producer = Callable[[Callable[[Any], None], threading.Event], None]


class JobCancelled(Exception):
    """The job's client went away before or while it ran."""


_END = object()


class _Failure:
    def __init__(self, error: BaseException) -> None:
        self.error = error


class WorkQueue:
    """A fixed pool of worker threads with a bounded FIFO queue in front.

    Args:
        workers: jobs that run at the same time.
        max_queued: jobs that may wait for a worker; more are refused with :class:`QueueFullError`.
        name: worker thread name prefix.
    """

    def __init__(self, workers: int = 1, max_queued: int = 16, name: str = "stepaudio-api") -> None:
        if workers < 1 or max_queued < 0:
            raise ValueError(f"need workers >= 1 and max_queued >= 0, got {workers} and {max_queued}")
        self.workers = workers
        self.max_queued = max_queued
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=name)
        self._lock = threading.Lock()
        self._running = 0
        self._waiting = 0
        self._closed = False

    @property
    def capacity(self) -> int:
        """Jobs that may be running or waiting at once."""
        return self.workers + self.max_queued

    def stats(self) -> dict[str, int]:
        """``{"workers", "running", "queued", "max_queued"}`` right now."""
        with self._lock:
            return {
                "workers": self.workers,
                "running": self._running,
                "queued": self._waiting,
                "max_queued": self.max_queued,
            }

    def submit(self, job: Callable[[threading.Event], T], cancel: threading.Event | None = None) -> Future:
        """Queue ``job(cancelled)`` now (any thread); raises :class:`QueueFullError` when the queue is full.

        Returns a ``concurrent.futures.Future`` of its result.  A job whose ``cancel`` event is set
        before it starts is not run (its future raises :class:`JobCancelled`).
        """
        cancel = cancel if cancel is not None else threading.Event()
        with self._lock:
            if self._closed:
                raise RuntimeError("the work queue is shut down")
            if self._running + self._waiting >= self.capacity:
                raise QueueFullError(self.capacity)
            self._waiting += 1

        def run() -> T:
            with self._lock:
                self._waiting -= 1
                self._running += 1
            try:
                if cancel.is_set():
                    raise JobCancelled("the client went away before the job started")
                return job(cancel)
            finally:
                with self._lock:
                    self._running -= 1

        future = self._executor.submit(run)

        def forget_if_never_run(done: Future) -> None:
            if done.cancelled():  # cancelled before a worker took it: run() never counted it
                with self._lock:
                    self._waiting -= 1

        future.add_done_callback(forget_if_never_run)
        return future

    async def run(self, job: Callable[[threading.Event], T]) -> T:
        """Run ``job(cancelled)`` on a worker and return its result (its exception is raised here).

        If the awaiting task is cancelled (the client went away), ``cancelled`` is set for the job.
        """
        cancel = threading.Event()
        future = self.submit(job, cancel)
        try:
            return await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            cancel.set()
            raise

    def stream(self, producer: Producer) -> WorkStream:
        """Start a streaming job now (429 at once when full); iterate the result for its pieces."""
        return WorkStream(self, producer)

    def close(self) -> None:
        """Refuse new jobs, drop the waiting ones; running ones finish in the background."""
        with self._lock:
            self._closed = True
        self._executor.shutdown(wait=False, cancel_futures=True)


class WorkStream:
    """The pieces of a streaming job, as an async iterator; ``aclose()`` (or leaving early) cancels the job."""

    def __init__(self, queue: WorkQueue, producer: Producer) -> None:
        self._loop = asyncio.get_running_loop()
        self._items: asyncio.Queue[Any] = asyncio.Queue()
        self.cancel = threading.Event()
        self._done = False

        def emit(item: Any) -> None:
            if self.cancel.is_set():
                raise JobCancelled("the client went away")
            try:
                self._loop.call_soon_threadsafe(self._items.put_nowait, item)
            except RuntimeError:  # the event loop is gone (server shutdown)
                self.cancel.set()
                raise JobCancelled("the server is shutting down") from None

        def job(cancel: threading.Event) -> None:
            try:
                producer(emit, cancel)
            except JobCancelled:
                pass
            except BaseException as error:  # handed to the consumer, which maps it to an API error
                self._put(_Failure(error))
            finally:
                self._put(_END)

        self._future = queue.submit(job, self.cancel)

    def _put(self, item: Any) -> None:
        try:
            self._loop.call_soon_threadsafe(self._items.put_nowait, item)
        except RuntimeError:
            pass

    def __aiter__(self) -> AsyncIterator[Any]:
        return self

    async def __anext__(self) -> Any:
        if self._done:
            raise StopAsyncIteration
        try:
            item = await self._items.get()
        except asyncio.CancelledError:
            self.cancel.set()
            raise
        if item is _END:
            self._done = True
            raise StopAsyncIteration
        if isinstance(item, _Failure):
            self._done = True
            self.cancel.set()
            raise item.error
        return item

    async def aclose(self) -> None:
        """Stop the job (it ends at its next piece); pieces not yet read are dropped."""
        self._done = True
        self.cancel.set()
