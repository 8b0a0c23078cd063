"""``InputRateLimiter``: a per-session token bucket over seconds of audio, so one client cannot starve the others."""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["InputRateLimiter"]


class InputRateLimiter:
    """Token bucket over seconds of audio: at most ``speed`` s per second of wall time, bursts of ``burst_s``.

    The bucket starts full (``burst_s``) and refills at ``speed`` per second of ``clock``.  A frame is
    admitted when the bucket holds its duration (or is full, for frames longer than the burst), and its
    duration is taken out; otherwise it is dropped whole.  Drops are counted for :meth:`report_due`,
    which hands them out at most once per ``report_interval_s``.

    Args:
        speed: seconds of audio per second of wall time.
        burst_s: bucket size, seconds of audio.
        clock: seconds, monotonic (``time.monotonic``; tests pass a fake one).
        report_interval_s: shortest time between two reports of dropped audio.
    """

    def __init__(
        self,
        speed: float,
        burst_s: float,
        clock: Callable[[], float] = time.monotonic,
        report_interval_s: float = 1.0,
    ) -> None:
        self.speed = float(speed)
        self.burst_s = float(burst_s)
        self.clock = clock
        self.report_interval_s = report_interval_s
        self.accepted_s = 0.0
        self.dropped_s = 0.0
        self._tokens = self.burst_s
        self._updated = clock()
        self._unreported_s = 0.0
        self._reported_at: float | None = None

    @property
    def available_s(self) -> float:
        """Seconds of audio that may be sent right now."""
        self._refill()
        return self._tokens

    def _refill(self) -> None:
        now = self.clock()
        self._tokens = min(self.burst_s, self._tokens + max(0.0, now - self._updated) * self.speed)
        self._updated = now

    def admit(self, seconds: float) -> bool:
        """Take ``seconds`` of audio if the limit allows it now (True), else count it as dropped (False)."""
        self._refill()
        if self._tokens >= min(seconds, self.burst_s):
            self._tokens -= seconds
            self.accepted_s += seconds
            return True
        self.dropped_s += seconds
        self._unreported_s += seconds
        return False

    def report_due(self) -> float | None:
        """Seconds dropped since the last report when one is due (at most one per interval), else ``None``."""
        if self._unreported_s <= 0:
            return None
        now = self.clock()
        if self._reported_at is not None and now - self._reported_at < self.report_interval_s:
            return None
        self._reported_at = now
        dropped, self._unreported_s = self._unreported_s, 0.0
        return dropped
