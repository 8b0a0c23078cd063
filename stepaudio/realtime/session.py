"""``RealtimeSession``: push microphone audio in, ``async for`` typed events out.

::

    pipeline = StepAudio.from_folder(model_path)    # or StepAudio(tokenizer_path, tts_path, llm_path, ...)
    session = RealtimeSession(pipeline)
    session.push_audio(pcm_chunk, 16000)          # any length, int16 or float, any fixed rate
    async for event in session.events():           # StateChanged, Transcript, ReplyTextDelta,
        ...                                        # AudioChunk, SpeculationUpdate, BargeIn, TurnMetrics

Threads of a session: ``push_audio`` (the caller's thread) resamples to 16 kHz
(:class:`~stepaudio.resample.ResamplerStream`), cuts 32 ms frames and posts them to the session's
:class:`~stepaudio.realtime.inputs.Inbox`.  The session loop (one thread) takes every input from that
inbox -- microphone frames, which it passes through the VAD, tokenizer output, model output, playback
reports -- hands each to the :class:`TurnController`, and posts a ``Tick`` when the controller's
deadline passes with nothing else to do.  The tokenizer stream runs on the session's own one-thread
*tokenizer lane*; replies and transcripts run on a :class:`ModelWorkers` pool that several sessions may
share.  Workers only post events; only the loop thread changes the conversation.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import numpy as np

from ..errors import AudioInputError, RealtimeSessionClosedError
from ..resample import ResamplerStream
from .config import FRAME_SAMPLES, SAMPLE_RATE, RealtimeConfig
from .context import Transcriber
from .controller import TurnController
from .events import ErrorEvent, RealtimeEvent
from .inputs import AudioFrame, Inbox, PlaybackReport, Tick, VoiceFrame
from .vad import SileroVAD, VoiceActivityDetector
from .workers import ModelWorkers

logger = logging.getLogger(__name__)

__all__ = ["RealtimeSession"]

_STOP = object()


class _EventChannel:
    """Thread-safe producer side, asyncio consumer side; bound to the loop of the first consumer."""

    def __init__(self) -> None:
        self._items: collections.deque[RealtimeEvent] = collections.deque()
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wakeup: asyncio.Event | None = None
        self.closed = False

    def put(self, event: RealtimeEvent) -> None:
        with self._lock:
            if self.closed:
                return
            self._items.append(event)
            loop, wakeup = self._loop, self._wakeup
        if loop is not None and wakeup is not None:
            try:
                loop.call_soon_threadsafe(wakeup.set)
            except RuntimeError:  # the consumer's loop is gone; nobody is listening any more
                pass

    def close(self) -> None:
        with self._lock:
            self.closed = True
            loop, wakeup = self._loop, self._wakeup
        if loop is not None and wakeup is not None:
            try:
                loop.call_soon_threadsafe(wakeup.set)
            except RuntimeError:
                pass

    def drain(self) -> list[RealtimeEvent]:
        """Take every queued event now (synchronous consumers)."""
        with self._lock:
            items = list(self._items)
            self._items.clear()
        return items

    async def iterate(self) -> AsyncIterator[RealtimeEvent]:
        with self._lock:
            if self._loop is None:
                self._loop = asyncio.get_running_loop()
                self._wakeup = asyncio.Event()
        assert self._wakeup is not None
        while True:
            with self._lock:
                item = self._items.popleft() if self._items else None
                finished = item is None and self.closed
            if item is not None:
                yield item
            elif finished:
                return
            else:
                await self._wakeup.wait()
                self._wakeup.clear()


class RealtimeSession:
    """One live voice conversation over a :class:`~stepaudio.StepAudio` pipeline.

    Args:
        pipeline: the loaded models (shared by any number of sessions).
        config: thresholds and generation settings (default :class:`RealtimeConfig`); checked against
            the models here, before any audio is taken.
        workers: the model work queue; pass one :class:`ModelWorkers` to share it between sessions
            (default: a private one with one worker, shut down by :meth:`close`).
        vad: voice activity detector for this session (default: a new :class:`SileroVAD`).
        transcriber: transcriber of past user turns (default: the chat model with the ASR prompt).
        clock: monotonic seconds used for every decision and measurement (default ``time.perf_counter``).

    Raises:
        RealtimeConfigError: the configuration does not fit the models (an unknown speaker, a reply
            budget the chat model cannot hold).
    """

    def __init__(
        self,
        pipeline: Any,
        config: RealtimeConfig | None = None,
        *,
        workers: ModelWorkers | None = None,
        vad: VoiceActivityDetector | None = None,
        transcriber: Transcriber | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.config = config if config is not None else RealtimeConfig()
        self.clock = clock
        self._channel = _EventChannel()
        self._inbox = Inbox()
        self._tokenizer_lane = ModelWorkers(1, name="tokenizer")
        self._owns_workers = workers is None
        self.workers = workers if workers is not None else ModelWorkers(1)
        try:
            self.controller = TurnController(
                pipeline,
                self.config,
                workers=self.workers,
                tokenizer_lane=self._tokenizer_lane,
                post=self._inbox.post,
                emit=self._channel.put,
                clock=clock,
                transcriber=transcriber,
            )
        except BaseException:
            self._tokenizer_lane.shutdown()
            if self._owns_workers:
                self.workers.shutdown()
            raise
        self.vad = vad if vad is not None else SileroVAD()
        self._input_rate: int | None = None
        self._resampler: Any = None
        self._pending = np.zeros(0, dtype=np.float32)
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="stepaudio-realtime-session", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------------------------------ input
    def push_audio(self, pcm: np.ndarray | bytes, sample_rate: int) -> None:
        """Queue microphone audio: int16 PCM (array or little-endian bytes) or float in [-1, 1], mono.

        The sample rate must stay the same for the whole session; any rate is resampled to 16 kHz.
        """
        if self._closed:
            raise RealtimeSessionClosedError("push_audio() was called after close(); start a new RealtimeSession")
        samples = self._to_float(pcm)
        if not isinstance(sample_rate, (int, np.integer)) or not 8000 <= sample_rate <= 192000:
            raise AudioInputError(f"sample_rate must be an integer number of Hz in [8000, 192000]; got {sample_rate!r}")
        if self._input_rate is None:
            self._input_rate = int(sample_rate)
            if sample_rate != SAMPLE_RATE:
                self._resampler = ResamplerStream(int(sample_rate), SAMPLE_RATE)
        elif sample_rate != self._input_rate:
            raise AudioInputError(
                f"this session receives {self._input_rate} Hz audio, but push_audio got {sample_rate} Hz; "
                "keep one sample rate per session (start a new session to change it)"
            )
        if self._resampler is not None:
            samples = self._resampler.feed(samples)
        pending = np.concatenate([self._pending, samples])
        whole = pending.shape[0] // FRAME_SAMPLES * FRAME_SAMPLES
        for start in range(0, whole, FRAME_SAMPLES):
            self._inbox.post(AudioFrame(pending[start : start + FRAME_SAMPLES]))
        self._pending = pending[whole:]

    @staticmethod
    def _to_float(pcm: np.ndarray | bytes) -> np.ndarray:
        if isinstance(pcm, (bytes, bytearray, memoryview)):
            if len(pcm) % 2:
                raise AudioInputError(
                    f"PCM16 audio bytes must come in whole 2-byte samples; got {len(pcm)} bytes (an odd count)"
                )
            pcm = np.frombuffer(pcm, dtype="<i2")
        array = np.asarray(pcm)
        if array.ndim != 1:
            raise AudioInputError(f"push_audio takes mono audio of shape [T]; got shape {array.shape}")
        if array.dtype == np.int16:
            return array.astype(np.float32) / 32768.0
        if not np.issubdtype(array.dtype, np.floating):
            raise AudioInputError(f"push_audio takes int16 PCM or float samples; got dtype {array.dtype}")
        samples = array.astype(np.float32)
        if not np.all(np.isfinite(samples)):
            raise AudioInputError("push_audio got NaN or infinite samples; check the audio source")
        return samples

    def _loop(self) -> None:
        """The session loop: every input, in order, to the controller (the only thread that changes it)."""
        controller = self.controller
        while True:
            deadline = controller.next_deadline()
            timeout = None if deadline is None else max(0.0, deadline - self.clock())
            event = self._inbox.get(timeout)
            if event is None:  # the controller's deadline passed with nothing else to do
                event = Tick()
            elif event is _STOP:
                self._inbox.task_done()
                return
            try:
                if isinstance(event, AudioFrame):
                    event = VoiceFrame(event.samples, self.vad.speech_probability(event.samples))
                controller.handle(event)
            except Exception as error:
                logger.exception("realtime session failed on %s", type(event).__name__)
                self._channel.put(ErrorEvent(code="internal_error", message=f"processing audio failed: {error!r}"))
            finally:
                if not isinstance(event, Tick):
                    self._inbox.task_done()

    def wait_processed(self) -> None:
        """Block until every input posted so far (audio frames, model output) has been handled (tests, benchmarks)."""
        self._inbox.join()

    def report_playback(self, turn: int, played_seconds: float) -> None:
        """Tell the session how much of reply ``turn`` the client has actually played (optional).

        Used at a barge-in to keep only the heard part of the reply in the history; without reports
        the session assumes each chunk plays as soon as it is sent.
        """
        self._inbox.post(PlaybackReport(turn=turn, played_seconds=float(played_seconds)))

    # ----------------------------------------------------------------------------------------- output
    async def events(self) -> AsyncIterator[RealtimeEvent]:
        """Events in order as they happen; ends after :meth:`close` once the queued ones are read."""
        async for event in self._channel.iterate():
            yield event

    def take_events(self) -> list[RealtimeEvent]:
        """The events queued so far, without waiting (for synchronous callers)."""
        return self._channel.drain()

    @property
    def state(self) -> Any:
        """The controller's current :class:`ConversationState`."""
        return self.controller.state

    # ---------------------------------------------------------------------------------------- closing
    def close(self) -> None:
        """Stop the session: cancel its replies, stop its thread, end :meth:`events`."""
        if self._closed:
            return
        self._closed = True
        self._inbox.post(_STOP)
        self._thread.join()
        self.controller.close()  # after the loop: only its thread touched the controller before
        self._tokenizer_lane.shutdown()
        self._channel.close()
        if self._owns_workers:
            self.workers.shutdown()

    def __enter__(self) -> "RealtimeSession":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
