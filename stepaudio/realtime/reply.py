"""``ReplyJob``: the model work of one spoken reply -- chat text stream -> sentence segments -> TTS stream.

A job runs on a worker (:class:`~stepaudio.realtime.workers.ModelWorkers`) and only *posts* what it
makes to the session's inbox (:class:`~stepaudio.realtime.inputs.ReplyText`, ``ReplySegment``,
``ReplyAudio``, ``ReplySegmentDone`` and, last, ``ReplyDone``); it holds no conversation state and no
lock.  Whether its output is played, held back (a speculative reply) or dropped (a discarded one) is
the controller's decision.  :meth:`ReplyJob.cancel` stops the chat and TTS generation within one token
/ one chunk.

The chat model generates on its own thread (``StepAudioChat.stream``), so it keeps producing text
while this job synthesizes the previous sentence.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..tts.text import has_speakable_text
from ..tts.tts import SAMPLE_RATE as TTS_SAMPLE_RATE
from .config import RealtimeConfig
from .inputs import ReplyAudio, ReplyDone, ReplySegment, ReplySegmentDone, ReplyText
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
    """The work of one reply to one user turn.

    Args:
        job_id: the controller's number for this job (every posted event carries it).
        messages: chat messages (history + current user audio ids).
        llm / tts: ``StepAudioChat`` / ``StepAudioTTS`` (shared; separate calls may run concurrently).
        config: generation settings (``max_new_tokens``, sampling, ``speaker``, ``max_sentence_chars``).
        post: where events go (the session's ``Inbox.post``).
    """

    def __init__(
        self,
        job_id: int,
        messages: Sequence[dict[str, Any]],
        llm: Any,
        tts: Any,
        config: RealtimeConfig,
        post: Callable[[object], None],
    ) -> None:
        self.job_id = job_id
        self.messages = list(messages)
        self.llm = llm
        self.tts = tts
        self.config = config
        self.post = post
        self.cancelled = threading.Event()
        # StepAudioChat.stream sets its cancel event when it ends, so the chat gets its own.
        self._chat_cancel = threading.Event()
        self._segments = 0

    def cancel(self) -> None:
        """Stop the work (the chat within a token, the TTS within a chunk); ``ReplyDone`` still follows."""
        self.cancelled.set()
        self._chat_cancel.set()

    def run(self) -> None:
        """Generate the reply (called on a worker thread); always ends by posting ``ReplyDone``."""
        error: str | None = None
        try:
            if not self.cancelled.is_set():
                self._generate()
        except Exception as failure:  # reported to the controller, which tells the client
            logger.warning("reply job %d failed: %r", self.job_id, failure)
            error = f"{type(failure).__name__}: {failure}"
        finally:
            self.post(ReplyDone(job=self.job_id, cancelled=self.cancelled.is_set(), error=error))

    def _generate(self) -> None:
        config = self.config
        splitter = SentenceStream(config.max_sentence_chars)
        pieces = self.llm.stream(
            self.messages,
            max_new_tokens=config.max_new_tokens,
            temperature=config.temperature,
            top_p=config.top_p,
            do_sample=config.do_sample,
            cancel=self._chat_cancel,
            **config.chat_kwargs,
        )
        try:
            for piece in pieces:
                if self.cancelled.is_set():
                    return
                self.post(ReplyText(job=self.job_id, text=piece))
                for segment in splitter.feed(piece):
                    if not self._speak(segment):
                        return
            if not self.cancelled.is_set():
                for segment in splitter.close():
                    if not self._speak(segment):
                        return
        finally:
            pieces.close()  # stops the chat generation within a token when we left early

    def _speak(self, text: str) -> bool:
        """Synthesize one segment; False when cancelled meanwhile."""
        index = self._segments
        self._segments += 1
        self.post(ReplySegment(job=self.job_id, index=index, text=text))
        if not has_speakable_text(text):  # only punctuation or emoji: part of the reply's text, but not spoken
            self.post(ReplySegmentDone(job=self.job_id, segment=index))
            return True
        chunks = self.tts.stream(text, self.config.speaker)
        try:
            for chunk in chunks:
                if self.cancelled.is_set():
                    return False
                samples = chunk.detach().reshape(-1).to("cpu").float().numpy().astype(np.float32, copy=False)
                if samples.size:
                    self.post(ReplyAudio(job=self.job_id, segment=index, sample_rate=TTS_SAMPLE_RATE, samples=samples))
        finally:
            chunks.close()  # stops the TTS language model within a token when we left early
        if self.cancelled.is_set():
            return False
        self.post(ReplySegmentDone(job=self.job_id, segment=index))
        return True
