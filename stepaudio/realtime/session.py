"""``RealtimeSession``: push microphone audio in, ``async for`` typed events out.

::

    pipeline = StepAudio(tokenizer_path, tts_path, llm_path, speakers_dir=...)
    session = RealtimeSession(pipeline)
    session.push_audio(pcm_chunk, 16000)          # any length, int16 or float, any fixed rate
    async for event in session.events():           # StateChanged, Transcript, ReplyTextDelta,
        ...                                        # AudioChunk, SpeculationUpdate, BargeIn, TurnMetrics

Audio is resampled to 16 kHz (:class:`~stepaudio.resample.ResamplerStream`), cut into 32 ms frames and
handed to a per-session thread that runs VAD, the streaming tokenizer and the :class:`TurnController`;
model work (replies, transcripts) runs on a :class:`ModelWorkers` queue that several sessions may share.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import queue
import threading
from collections.abc import AsyncIterator
from typing import Any

import numpy as np

from ..errors import AudioInputError, RealtimeSessionClosedError
from ..resample import ResamplerStream
from .config import FRAME_SAMPLES, SAMPLE_RATE, RealtimeConfig
from .context import Transcriber
from .controller import TurnController
from .events import ErrorEvent, RealtimeEvent
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
        config: thresholds and generation settings (default :class:`RealtimeConfig`).
        workers: the model work queue; pass one :class:`ModelWorkers` to share it between sessions
            (default: a private one with one worker, shut down by :meth:`close`).
        vad: voice activity detector for this session (default: a new :class:`SileroVAD`).
        transcriber: transcripts of past user turns (default: the chat model with the ASR prompt).
    """

    def __init__(
        self,
        pipeline: Any,
        config: RealtimeConfig | None = None,
        *,
        workers: ModelWorkers | None = None,
        vad: VoiceActivityDetector | None = None,
        transcriber: Transcriber | None = None,
    ) -> None:
        self.config = config if config is not None else RealtimeConfig()
        self._owns_workers = workers is None
        self.workers = workers if workers is not None else ModelWorkers(1)
        self._channel = _EventChannel()
        self.controller = TurnController(
            pipeline,
            self.config,
            vad if vad is not None else SileroVAD(),
            self.workers,
            self._channel.put,
            transcriber=transcriber,
        )
        self._frames: queue.Queue[Any] = queue.Queue()
        self._input_rate: int | None = None
        self._resampler: Any = None
        self._pending = np.zeros(0, dtype=np.float32)
        self._closed = False
        self._thread = threading.Thread(target=self._process_frames, name="stepaudio-realtime-session", daemon=True)
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
            self._frames.put(pending[start : start + FRAME_SAMPLES])
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

    def _process_frames(self) -> None:
        while (frame := self._frames.get()) is not _STOP:
            try:
                self.controller.process_frame(frame)
            except Exception as error:
                logger.exception("realtime session failed on an audio frame")
                self._channel.put(ErrorEvent(code="internal_error", message=f"processing audio failed: {error!r}"))
            finally:
                self._frames.task_done()
        self._frames.task_done()

    def wait_processed(self) -> None:
        """Block until every frame pushed so far has gone through the controller (tests, benchmarks)."""
        self._frames.join()

    def report_playback(self, turn: int, played_seconds: float) -> None:
        """Tell the session how much of reply ``turn`` the client has actually played (optional).

        Used at a barge-in to keep only the heard part of the reply in the history; without reports
        the session assumes each chunk plays as soon as it is sent.
        """
        self.controller.report_playback(turn, played_seconds)

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
        self.controller.close()
        self._frames.put(_STOP)
        self._thread.join()
        self._channel.close()
        if self._owns_workers:
            self.workers.shutdown()

    def __enter__(self) -> "RealtimeSession":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
