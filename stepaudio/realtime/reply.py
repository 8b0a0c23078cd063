"""``ReplyJob``: one spoken reply -- chat text stream -> sentence segments -> TTS stream -- with gated output.

A job runs on the shared :class:`~stepaudio.realtime.workers.ModelWorkers`.  Its output (text deltas
and audio chunks) goes to a sink only once the job is *released*; until then (a speculative reply) it
is buffered.  :meth:`ReplyJob.discard` stops all further output at once (under the controller's lock,
so not a single chunk slips out after it) and cancels the chat and TTS generation, which stop within
one token / one chunk.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..tts.text import has_speakable_text
from ..tts.tts import SAMPLE_RATE as TTS_SAMPLE_RATE
from .config import RealtimeConfig
from .events import AudioChunk, ErrorEvent, RealtimeEvent, ReplyTextDelta
from .sentences import SentenceStream

logger = logging.getLogger(__name__)

__all__ = ["ReplyJob", "SpokenSegment"]


@dataclass
class SpokenSegment:
    """A piece of reply text sent to TTS and how much audio it has produced so far."""

    text: str
    seconds: float = 0.0
    finished: bool = False


class ReplyJob:
    """One reply to one user turn (possibly speculative).

    Args:
        turn: user turn number the reply answers.
        messages: chat messages (history + current user audio ids).
        audio_ids_used: number of current-turn audio ids in ``messages``.
        llm / tts: ``StepAudioChat`` / ``StepAudioTTS`` (shared, thread-safe for separate calls).
        config: generation settings.
        lock: the controller's lock; output delivery, :meth:`release` and :meth:`discard` hold it.
        sink: receives released output (called with ``lock`` held).
        on_finished: called once when the job's work ends (any thread, ``lock`` not held).
        speculative: buffer output until :meth:`release`.
    """

    def __init__(
        self,
        turn: int,
        messages: Sequence[dict[str, Any]],
        audio_ids_used: int,
        llm: Any,
        tts: Any,
        config: RealtimeConfig,
        lock: threading.RLock,
        sink: Callable[["ReplyJob", RealtimeEvent], None],
        on_finished: Callable[["ReplyJob"], None],
        speculative: bool,
    ) -> None:
        self.turn = turn
        self.messages = list(messages)
        self.audio_ids_used = audio_ids_used
        self.llm = llm
        self.tts = tts
        self.config = config
        self.lock = lock
        self.sink = sink
        self.on_finished = on_finished
        self.speculative = speculative
        self.cancel = threading.Event()
        # StepAudioChat.stream sets its cancel event when it ends, so the chat gets its own.
        self._chat_cancel = threading.Event()
        self.finished = threading.Event()
        self.released = not speculative
        self.discarded = False
        self.failed: BaseException | None = None
        self.text = ""
        self.segments: list[SpokenSegment] = []
        self.audio_chunks = 0
        #: segment index (into ``segments``) of every audio chunk, by chunk index
        self.chunk_segments: list[int] = []
        self.released_at: float | None = None if speculative else time.perf_counter()
        self._buffer: list[RealtimeEvent] = []

    # ---------------------------------------------------------------------------------- output gating
    def _deliver(self, event: RealtimeEvent) -> bool:
        """Send or buffer one output event; False once the job is discarded (stop working)."""
        with self.lock:
            if self.discarded:
                return False
            if self.released:
                self.sink(self, event)
            else:
                self._buffer.append(event)
            return True

    def release(self) -> int:
        """Make the reply live: flush buffered output to the sink; returns the audio chunks that were ready."""
        with self.lock:
            self.released = True
            self.released_at = time.perf_counter()
            buffered, self._buffer = self._buffer, []
            ready = sum(isinstance(event, AudioChunk) for event in buffered)
            for event in buffered:
                self.sink(self, event)
            return ready

    def discard(self) -> None:
        """Stop output now and cancel the remaining work."""
        with self.lock:
            self.discarded = True
            self._buffer.clear()
        self.cancel.set()
        self._chat_cancel.set()

    # ------------------------------------------------------------------------------------------- work
    def run(self) -> None:
        """Generate the reply (called on a worker thread)."""
        try:
            if not self.cancel.is_set():
                self._generate()
        except BaseException as error:
            self.failed = error
            self._deliver(ErrorEvent(code="reply_failed", message=f"reply to turn {self.turn} failed: {error!r}"))
            raise
        finally:
            self.finished.set()
            self.on_finished(self)

    def _generate(self) -> None:
        segments: queue.Queue[str | None] = queue.Queue()
        text_failure: list[BaseException] = []
        text_thread = threading.Thread(
            target=self._stream_text, args=(segments, text_failure), name="stepaudio-realtime-reply-text", daemon=True
        )
        text_thread.start()
        try:
            while (segment := segments.get()) is not None:
                if self.cancel.is_set():
                    break
                self._speak(segment)
        finally:
            text_thread.join()
        if text_failure:
            raise text_failure[0]

    def _stream_text(self, segments: queue.Queue[str | None], failure: list[BaseException]) -> None:
        config = self.config
        splitter = SentenceStream(config.max_sentence_chars)
        try:
            pieces = self.llm.stream(
                self.messages,
                max_new_tokens=config.max_new_tokens,
                temperature=config.temperature,
                top_p=config.top_p,
                do_sample=config.do_sample,
                cancel=self._chat_cancel,
                **config.chat_kwargs,
            )
            for piece in pieces:
                self.text += piece
                if not self._deliver(ReplyTextDelta(turn=self.turn, text=piece)):
                    break
                for segment in splitter.feed(piece):
                    segments.put(segment)
            if not self.cancel.is_set():
                for segment in splitter.close():
                    segments.put(segment)
        except BaseException as error:  # re-raised on the job thread
            failure.append(error)
        finally:
            segments.put(None)

    def _speak(self, text: str) -> None:
        spoken = SpokenSegment(text=text)
        with self.lock:
            self.segments.append(spoken)
        if not has_speakable_text(text):  # only punctuation or emoji: part of the reply's text, but not spoken
            return
        chunks = self.tts.stream(text, self.config.speaker)
        try:
            for chunk in chunks:
                samples = chunk.detach().reshape(-1).to("cpu").float().numpy().astype(np.float32, copy=False)
                if samples.size == 0:
                    continue
                event = AudioChunk(
                    turn=self.turn, index=self.audio_chunks, sample_rate=TTS_SAMPLE_RATE, samples=samples
                )
                with self.lock:
                    spoken.seconds += event.seconds
                    self.audio_chunks += 1
                    self.chunk_segments.append(len(self.segments) - 1)
                if not self._deliver(event) or self.cancel.is_set():
                    return
            spoken.finished = True
        finally:
            chunks.close()  # stops the TTS language model within a token when we left early
