"""The one streaming abstraction shared by every streaming component.

A stream takes input in pieces with :meth:`Stream.feed`, returns output as soon as it is final, and
is finished with :meth:`Stream.close`, which returns whatever was still held back.  Offline use is
the special case "feed everything, then close", so every component can test streaming against
offline by construction.  A stream keeps all of its mutable state in ``self.state`` (one dataclass
per stream type), which makes the state easy to inspect, log and reset.

:meth:`Stream.reset` forgets everything fed so far and reopens the stream (``closed`` becomes
False), open or closed, so one instance can serve clip after clip: after ``reset()`` the stream
behaves exactly like a freshly built one (same output for the same input).  Output still held back
is discarded, not returned; call :meth:`Stream.close` first to get it.  The base class reopens the
stream; the subclass's :meth:`Stream._reset` restores its state -- usually a new state dataclass,
plus ``reset()`` of any inner streams and clearing of any accumulated result.  It is abstract, so no
stream can skip it (``tests/test_streaming_contract.py`` checks the whole contract for every
subclass).  Models, checkpoints and configuration are kept: reset is cheap.

Typical use::

    with tokenizer.stream(sample_rate=16000) as session:
        for chunk in microphone:
            ids = session.feed(chunk)      # new, final output for this chunk (may be empty)
    ids = session.result                   # everything, once the `with` block closed the stream

Leaving the ``with`` block by an exception closes the stream *without* flushing it (the held-back
output is dropped unread), so stopping early costs no final window of work.

Subclasses implement :meth:`_feed`, :meth:`_flush` and :meth:`_reset` only.

Per-frame models that return one value per fixed-size frame (the VADs of
:mod:`stepaudio.realtime.vad`) are not streams: they have no held-back output to flush, but they
are stateful and have ``reset()`` too.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from typing import Any, Generic, TypeVar

from .errors import StreamClosedError

InputT = TypeVar("InputT")
OutputT = TypeVar("OutputT")

__all__ = ["Stream"]


class Stream(ABC, Generic[InputT, OutputT]):
    """Base class of all streams: ``feed`` pieces, get final output back, ``close`` to flush, ``reset`` to reuse.

    Attributes:
        state: the stream's mutable state, one dataclass instance (set by the subclass).
    """

    state: Any

    def __init__(self) -> None:
        self._closed = False

    @property
    def closed(self) -> bool:
        """True once :meth:`close` has been called."""
        return self._closed

    def feed(self, piece: InputT) -> OutputT:
        """Consume one piece of input and return the output that became final because of it."""
        if self._closed:
            raise StreamClosedError(
                f"{type(self).__name__}.feed() was called after close(); call reset() (or start a new stream) "
                "for new input"
            )
        return self._feed(piece)

    def close(self) -> OutputT:
        """Finish the stream and return the output that was still held back (look-ahead, partial groups)."""
        if self._closed:
            raise StreamClosedError(f"{type(self).__name__}.close() was called twice")
        self._closed = True
        return self._flush()

    def reset(self) -> None:
        """Forget everything fed so far and reopen the stream, as if it had just been created.

        Works on an open or a closed stream; output still held back is discarded (call :meth:`close`
        first to get it).  The next piece starts a new input (a new clip, a new reply).
        """
        self._reset()
        self._closed = False

    def run(self, pieces: Iterable[InputT]) -> Iterator[OutputT]:
        """Feed every piece, yielding each output, then yield the output of :meth:`close`."""
        for piece in pieces:
            yield self.feed(piece)
        yield self.close()

    def __enter__(self) -> "Stream[InputT, OutputT]":
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc_info: object) -> None:
        """Close normally; when the block is left by an exception (an error, or ``GeneratorExit`` when a
        consumer stops a generator early, e.g. at a barge-in), drop the held-back output instead of
        computing it: nobody will read it."""
        if self._closed:
            return
        if exc_type is None:
            self.close()
        else:
            self._closed = True

    @abstractmethod
    def _feed(self, piece: InputT) -> OutputT:
        """Consume one piece (the stream is known to be open)."""

    @abstractmethod
    def _flush(self) -> OutputT:
        """Return held-back output at the end of the stream."""

    @abstractmethod
    def _reset(self) -> None:
        """Put every piece of mutable state back to what a new stream has (``self.state``, inner streams)."""
