"""The one streaming abstraction shared by every streaming component.

A stream takes input in pieces with :meth:`Stream.feed`, returns output as soon as it is final, and
is finished with :meth:`Stream.close`, which returns whatever was still held back.  Offline use is
the special case "feed everything, then close", so every component can test streaming against
offline by construction.  A stream keeps all of its mutable state in ``self.state`` (one dataclass
per stream type), which makes the state easy to inspect, log and reset.

Typical use::

    with tokenizer.stream(sample_rate=16000) as session:
        for chunk in microphone:
            ids = session.feed(chunk)      # new, final output for this chunk (may be empty)
    ids = session.result                   # everything, once the `with` block closed the stream

Subclasses implement :meth:`_feed` and :meth:`_flush` only.
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
    """Base class of all streams: ``feed`` pieces, get final output back, ``close`` to flush.

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
                f"{type(self).__name__}.feed() was called after close(); start a new stream for new input"
            )
        return self._feed(piece)

    def close(self) -> OutputT:
        """Finish the stream and return the output that was still held back (look-ahead, partial groups)."""
        if self._closed:
            raise StreamClosedError(f"{type(self).__name__}.close() was called twice")
        self._closed = True
        return self._flush()

    def run(self, pieces: Iterable[InputT]) -> Iterator[OutputT]:
        """Feed every piece, yielding each output, then yield the output of :meth:`close`."""
        for piece in pieces:
            yield self.feed(piece)
        yield self.close()

    def __enter__(self) -> "Stream[InputT, OutputT]":
        return self

    def __exit__(self, *exc_info: object) -> None:
        if not self._closed:
            self.close()

    @abstractmethod
    def _feed(self, piece: InputT) -> OutputT:
        """Consume one piece (the stream is known to be open)."""

    @abstractmethod
    def _flush(self) -> OutputT:
        """Return held-back output at the end of the stream."""
