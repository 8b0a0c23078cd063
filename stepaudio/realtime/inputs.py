"""What the :class:`~stepaudio.realtime.TurnController` consumes: typed input events on one queue.

Every change of a conversation's state happens on one thread, in ``TurnController.handle(event)``;
everything else only *posts* events to the session's :class:`Inbox`:

============================  ===========================================================================
producer                      events
============================  ===========================================================================
microphone (``push_audio``)   :class:`AudioFrame` -- the session loop runs the VAD on it and hands the
                              controller a :class:`VoiceFrame` (the frame with its VAD decision)
tokenizer lane (a worker)     :class:`TokensReady` (streamed ids), :class:`TurnRetokenized` (offline ids
                              of a finished turn), :class:`TokenizerFailed`
model workers                 :class:`ReplyText`, :class:`ReplySegment`, :class:`ReplyAudio`,
                              :class:`ReplySegmentDone`, :class:`ReplyDone`, :class:`TranscriptReady`
the client                    :class:`PlaybackReport`
the session loop's timer      :class:`Tick` (when nothing else arrived before the controller's deadline)
============================  ===========================================================================

Tests drive a controller by handing it these events directly, with a fake clock and workers that
run only when told (:class:`~stepaudio.realtime.workers.ManualWorkers`): no sleeping, no threads.
"""

from __future__ import annotations

import queue
from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "ControllerInput",
    "AudioFrame",
    "VoiceFrame",
    "TokensReady",
    "TurnRetokenized",
    "TokenizerFailed",
    "ReplyText",
    "ReplySegment",
    "ReplyAudio",
    "ReplySegmentDone",
    "ReplyDone",
    "TranscriptReady",
    "PlaybackReport",
    "Tick",
    "Inbox",
]


@dataclass(frozen=True)
class ControllerInput:
    """Base class of everything posted to a controller."""


@dataclass(frozen=True)
class AudioFrame(ControllerInput):
    """One 32 ms microphone frame (float32 ``[512]`` at 16 kHz) before voice activity detection."""

    samples: np.ndarray = field(repr=False, compare=False)


@dataclass(frozen=True)
class VoiceFrame(ControllerInput):
    """One 32 ms frame and the VAD's speech probability for it (the controller applies the thresholds)."""

    samples: np.ndarray = field(repr=False, compare=False)
    speech_probability: float


@dataclass(frozen=True)
class TokensReady(ControllerInput):
    """New interleaved audio ids of user turn ``turn`` from its tokenizer stream (``final``: the stream closed)."""

    turn: int
    ids: tuple[int, ...]
    final: bool = False


@dataclass(frozen=True)
class TurnRetokenized(ControllerInput):
    """The finished user turn tokenized offline with the exact energy normalisation.

    ``ids`` is ``None`` when it could not be (``error`` says why); ``seconds`` is the wall time it took.
    """

    turn: int
    ids: tuple[int, ...] | None
    seconds: float
    error: str | None = None


@dataclass(frozen=True)
class TokenizerFailed(ControllerInput):
    """The tokenizer stream of user turn ``turn`` raised ``error``."""

    turn: int
    error: str


@dataclass(frozen=True)
class ReplyText(ControllerInput):
    """A new piece of the reply text of job ``job``."""

    job: int
    text: str


@dataclass(frozen=True)
class ReplySegment(ControllerInput):
    """Job ``job`` starts speaking segment ``index`` (a sentence or clause of its text)."""

    job: int
    index: int
    text: str


@dataclass(frozen=True)
class ReplyAudio(ControllerInput):
    """Speech of segment ``segment`` of job ``job``: mono float32 ``samples`` at ``sample_rate``."""

    job: int
    segment: int
    sample_rate: int
    samples: np.ndarray = field(repr=False, compare=False)


@dataclass(frozen=True)
class ReplySegmentDone(ControllerInput):
    """Segment ``segment`` of job ``job`` is fully synthesized."""

    job: int
    segment: int


@dataclass(frozen=True)
class ReplyDone(ControllerInput):
    """Job ``job`` ended: finished, cancelled, or failed with ``error``."""

    job: int
    cancelled: bool = False
    error: str | None = None


@dataclass(frozen=True)
class TranscriptReady(ControllerInput):
    """The transcript of past user turn ``turn`` (``text`` is ``None`` when transcription failed)."""

    turn: int
    text: str | None
    error: str | None = None


@dataclass(frozen=True)
class PlaybackReport(ControllerInput):
    """The client has played ``played_seconds`` of the reply to ``turn``."""

    turn: int
    played_seconds: float


@dataclass(frozen=True)
class Tick(ControllerInput):
    """Time passed with no other input (the controller re-checks its deadlines)."""


class Inbox:
    """The one queue of a controller: any thread may :meth:`post`; one thread takes events with :meth:`get`."""

    def __init__(self) -> None:
        self._queue: queue.Queue[object] = queue.Queue()

    def post(self, event: object) -> None:
        """Queue ``event`` (never blocks)."""
        self._queue.put(event)

    def get(self, timeout: float | None = None) -> object | None:
        """The next event, waiting at most ``timeout`` seconds (``None``: no limit); ``None`` on timeout.

        Call :meth:`task_done` once the event has been handled (see :meth:`join`).
        """
        try:
            return self._queue.get(timeout=timeout)
        except queue.Empty:
            return None

    def take_all(self) -> list[object]:
        """Every queued event now, without waiting (synchronous drivers such as tests)."""
        events = []
        while True:
            try:
                events.append(self._queue.get_nowait())
            except queue.Empty:
                return events
            self._queue.task_done()

    def task_done(self) -> None:
        """Mark one event taken with :meth:`get` as handled."""
        self._queue.task_done()

    def join(self) -> None:
        """Block until every event posted so far has been taken and handled."""
        self._queue.join()

    def __len__(self) -> int:
        return self._queue.qsize()
