"""``ModelWorkers``: the queue of model work (replies, transcripts) shared by all sessions of a process.

The models are loaded once; every session submits its reply and transcript jobs here, and at most
``max_workers`` of them run at a time (the rest wait in FIFO order).  Jobs are cancelled
cooperatively (each checks its own ``threading.Event``), so a cancelled job that has not started
yet returns at once when its turn comes.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

__all__ = ["ModelWorkers"]

logger = logging.getLogger(__name__)


class ModelWorkers:
    """A bounded thread pool with a count of running + queued jobs (to check that none leak)."""

    def __init__(self, max_workers: int = 1) -> None:
        if max_workers < 1:
            raise ValueError(f"max_workers must be at least 1; got {max_workers}")
        self.max_workers = max_workers
        self._executor = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="stepaudio-realtime-worker")
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
