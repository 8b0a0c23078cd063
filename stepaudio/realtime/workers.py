"""Where model work runs: ``ModelWorkers`` (threads) and ``ManualWorkers`` (only when told, for tests).

The models are loaded once; every session submits its reply and transcript jobs to one shared
:class:`ModelWorkers`, and at most ``max_workers`` of them run at a time (the rest wait in FIFO
order).  Each session also has a private one-thread :class:`ModelWorkers` for its tokenizer stream
(the *tokenizer lane*: its jobs must run in order).  Jobs never touch conversation state: they post
input events to the session's :class:`~stepaudio.realtime.inputs.Inbox`.  They are cancelled
cooperatively (each checks its own ``threading.Event``), so a cancelled job that has not started
yet returns at once when its turn comes.

:class:`ManualWorkers` has the same interface but runs a job only when :meth:`ManualWorkers.run_next`
or :meth:`ManualWorkers.run_all` is called, on the calling thread, so a test decides exactly when
model output arrives (for example: end of turn while the tokenizer lags behind).
"""

from __future__ import annotations

import collections
import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Protocol

__all__ = ["JobRunner", "ModelWorkers", "ManualWorkers"]

logger = logging.getLogger(__name__)


class JobRunner(Protocol):
    """What a controller needs of a place to run work."""

    @property
    def pending_jobs(self) -> int:
        """Jobs submitted and not finished."""
        ...

    def submit(self, job: Callable[[], Any], name: str) -> object:
        """Run ``job`` some time later (``name`` is for logs)."""
        ...


class ModelWorkers:
    """A bounded thread pool with a count of running + queued jobs (to check that none leak).

    Args:
        max_workers: jobs that run at the same time.
        name: thread name suffix (``stepaudio-realtime-{name}``).
    """

    def __init__(self, max_workers: int = 1, name: str = "worker") -> None:
        if max_workers < 1:
            raise ValueError(f"max_workers must be at least 1; got {max_workers}")
        self.max_workers = max_workers
        self._executor = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix=f"stepaudio-realtime-{name}")
        self._lock = threading.Lock()
        self._pending = 0

    @property
    def pending_jobs(self) -> int:
        """Jobs submitted and not finished (running or queued)."""
        with self._lock:
            return self._pending

    def submit(self, job: Callable[[], Any], name: str) -> Future:
        """Queue ``job``; exceptions are logged (with ``name``) and kept in the returned future."""
        with self._lock:
            self._pending += 1

        def run() -> Any:
            try:
                return job()
            except BaseException:
                logger.exception("realtime job %s failed", name)
                raise
            finally:
                with self._lock:
                    self._pending -= 1

        return self._executor.submit(run)

    def shutdown(self, cancel_queued: bool = True) -> None:
        """Stop the threads after the running jobs (and, unless ``cancel_queued``, the queued ones) finish."""
        if cancel_queued:
            with self._lock:
                queued = self._pending
        self._executor.shutdown(wait=True, cancel_futures=cancel_queued)
        if cancel_queued:
            with self._lock:  # cancelled jobs never ran their bookkeeping
                self._pending = 0
            logger.debug("realtime workers shut down (%d jobs were running or queued)", queued)


class ManualWorkers:
    """Runs submitted jobs only when asked, in order, on the calling thread (deterministic tests).

    A job that raises is logged and re-raised by :meth:`run_next`, as a failing test should see it.
    """

    def __init__(self) -> None:
        self._jobs: collections.deque[tuple[Callable[[], Any], str]] = collections.deque()

    @property
    def pending_jobs(self) -> int:
        """Jobs submitted and not run yet."""
        return len(self._jobs)

    @property
    def pending_names(self) -> list[str]:
        """Names of the waiting jobs, oldest first."""
        return [name for _, name in self._jobs]

    def submit(self, job: Callable[[], Any], name: str) -> None:
        """Queue ``job`` until :meth:`run_next` / :meth:`run_all`."""
        self._jobs.append((job, name))

    def run_next(self) -> bool:
        """Run the oldest waiting job; False when there was none."""
        if not self._jobs:
            return False
        job, name = self._jobs.popleft()
        try:
            job()
        except BaseException:
            logger.exception("realtime job %s failed", name)
            raise
        return True

    def run_all(self) -> int:
        """Run jobs until none wait (jobs submitted meanwhile included); returns how many ran."""
        ran = 0
        while self.run_next():
            ran += 1
        return ran

    def shutdown(self, cancel_queued: bool = True) -> None:
        """Drop the waiting jobs (``cancel_queued``) or run them."""
        if cancel_queued:
            self._jobs.clear()
        else:
            self.run_all()
