"""``TurnController``: the turn-taking state machine of a realtime voice conversation.

States: Silence -> UserSpeaking -> UserPaused -> BotReplying -> Silence.

* **Silence -> UserSpeaking** after ``min_speech_ms`` of speech: a tokenizer stream starts and gets
  the user's audio (with ``preroll_ms`` of audio from before the detected start).
* **UserSpeaking -> UserPaused** after ``pause_ms`` of silence: a *speculative* reply starts on the
  worker queue from the audio ids so far.  Its output is held back.  The streaming tokenizer lags
  the audio (vq06 right context), so once the ids cover all of the speech a speculative reply made
  from fewer ids is replaced by one made from all of them (``discarded``, reason ``superseded``).
* **UserPaused -> UserSpeaking** when speech resumes: the speculative reply is discarded and cancelled.
* **UserPaused -> BotReplying** after ``end_of_turn_ms`` of silence: the speculative reply is
  committed (its held output is released at once) if its ids covered all of the user's speech;
  otherwise it is discarded and a reply is generated now from all the ids.
* **BotReplying -> Silence** when the reply is generated and its audio has played.
* **Barge-in**: ``barge_in_ms`` of speech during BotReplying stops the output under the lock
  (no chunk is sent after it), cancels the chat and TTS work, keeps only the played part of the
  reply in the history, and starts a new user turn.

Time: VAD decisions count frames of input audio; what has been *played* is estimated with the
wall clock from when each chunk was sent (a client plays chunks back to back as they arrive).
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import RealtimeConfigError
from ..tokenizer.interleave import AUDIO_TOKENS_PER_SECOND
from .config import FRAME_SAMPLES, SAMPLE_RATE, RealtimeConfig
from .context import ChatTranscriber, ConversationContext, Transcriber
from .events import (
    AudioChunk,
    BargeIn,
    ConversationState,
    RealtimeEvent,
    SpeculationUpdate,
    StateChanged,
    Transcript,
    TurnMetrics,
)
from .reply import ReplyJob
from .vad import SpeechGate, VoiceActivityDetector
from .workers import ModelWorkers

logger = logging.getLogger(__name__)

__all__ = ["TurnController", "SessionCounters", "AUDIO_IDS_PER_SECOND"]

#: Interleaved audio ids per second of audio (the tokenizer's constant, re-exported under its old name).
AUDIO_IDS_PER_SECOND = AUDIO_TOKENS_PER_SECOND
#: A client's playback report is trusted to keep advancing for at most this long after it arrived.
PLAYBACK_REPORT_HORIZON_S = 0.25
#: Fewest prompt tokens the chat model must have room for after the reply budget (a system prompt and a turn).
MIN_PROMPT_TOKENS = 64


@dataclass
class SessionCounters:
    """Running totals of a session (for commit rate and barge-ins)."""

    speculative_started: int = 0
    speculative_committed: int = 0
    speculative_discarded: int = 0
    barge_ins: int = 0
    turns: int = 0

    @property
    def commit_rate(self) -> float | None:
        if self.speculative_started == 0:
            return None
        return self.speculative_committed / self.speculative_started


@dataclass
class _TurnRecord:
    """Per-turn bookkeeping (metrics and playback)."""

    turn: int
    speech_end_wall: float = 0.0
    end_of_turn_wall: float | None = None
    first_audio_wall: float | None = None
    started: int = 0
    committed: int = 0
    discarded: int = 0
    committed_chunks: int = 0
    context_tokens: int = 0
    playback_end_wall: float = 0.0
    # (wall start, seconds, segment index) of every chunk sent
    schedule: list[tuple[float, float, int]] = field(default_factory=list)
    # the client's latest (played seconds, wall time of the report), if it reports playback
    client_playback: tuple[float, float] | None = None


class TurnController:
    """Feeds 16 kHz frames through VAD and the state machine; emits typed events through ``emit``.

    Args:
        pipeline: a :class:`~stepaudio.StepAudio` (``.encoder``, ``.llm``, ``.decoder``).
        config: thresholds and generation settings.
        vad: a voice activity detector for this audio stream.
        workers: the shared model work queue.
        emit: receives every event (from the frame thread or a worker thread; never blocks).
        transcriber: transcripts of past user turns (default: the chat model with the ASR prompt;
            ``config.transcribe_history=False`` keeps past turns as audio ids).
    """

    def __init__(
        self,
        pipeline: Any,
        config: RealtimeConfig,
        vad: VoiceActivityDetector,
        workers: ModelWorkers,
        emit: Callable[[RealtimeEvent], None],
        transcriber: Transcriber | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.config = config
        self.vad = vad
        self.workers = workers
        self.emit = emit
        self.lock = threading.RLock()
        self.gate = SpeechGate(config.vad_threshold, config.vad_negative_threshold)
        if transcriber is None and config.transcribe_history:
            transcriber = ChatTranscriber(pipeline.llm, config.transcript_max_new_tokens)
        max_prompt_tokens = pipeline.llm.max_seq_len - config.max_new_tokens  # the model's limit, reply included
        if max_prompt_tokens < MIN_PROMPT_TOKENS:
            raise RealtimeConfigError(
                f"max_new_tokens {config.max_new_tokens} leaves {max_prompt_tokens} prompt tokens in the chat "
                f"model's max_seq_len {pipeline.llm.max_seq_len}; at least {MIN_PROMPT_TOKENS} are needed: "
                "lower max_new_tokens",
                name="max_new_tokens",
                value=config.max_new_tokens,
            )
        self.context = ConversationContext(
            count_text_tokens=lambda text: len(pipeline.llm.tokenizer.encode(text)),
            token_budget=min(config.context_token_budget, max_prompt_tokens),
            count_prompt_tokens=lambda messages: len(pipeline.llm.encode_messages(messages)),
            max_prompt_tokens=max_prompt_tokens,
            system_prompt=config.system_prompt,
            transcriber=transcriber if config.transcribe_history else None,
            workers=workers,
            on_transcript=lambda turn, text: self.emit(Transcript(turn=turn, text=text)),
        )
        self.counters = SessionCounters()
        self.state = ConversationState.SILENCE
        self.turn = 0
        self.frames_seen = 0
        self.closed = False
        self._speech_run = 0
        self._silence_run = 0
        self._preroll: collections.deque[np.ndarray] = collections.deque(
            maxlen=max(1, config.preroll_ms * SAMPLE_RATE // (1000 * FRAME_SAMPLES))
        )
        self._stream: Any = None
        self._turn_samples = 0
        self._speech_end_s = 0.0
        self._speculative: ReplyJob | None = None
        self._reply: ReplyJob | None = None
        self._record: _TurnRecord | None = None
        self._frames_min_speech = config.frames(config.min_speech_ms)
        self._frames_barge_in = config.frames(config.barge_in_ms)
        self._frames_pause = config.frames(config.pause_ms)
        self._frames_end = config.frames(config.end_of_turn_ms)

    # ------------------------------------------------------------------------------------ frame entry
    def process_frame(self, frame: np.ndarray) -> None:
        """Advance the conversation by one 32 ms frame (float32 [512], 16 kHz mono)."""
        if self.closed:
            return
        speech = self.gate.update(self.vad.speech_probability(frame))
        self.frames_seen += 1
        self._preroll.append(frame)
        self._speech_run = self._speech_run + 1 if speech else 0
        self._silence_run = 0 if speech else self._silence_run + 1
        state = self.state
        if state is ConversationState.SILENCE:
            if self._speech_run >= self._frames_min_speech:
                self._start_user_turn()
        elif state is ConversationState.BOT_REPLYING:
            if self._speech_run >= self._frames_barge_in:
                self._barge_in()
                self._start_user_turn()
            else:
                self._maybe_finish_reply()
        else:
            self._feed_tokenizer(frame, speech)
            self._advance_user_turn()

    # ------------------------------------------------------------------------------------- user turns
    def _set_state(self, state: ConversationState) -> None:
        with self.lock:
            previous, self.state = self.state, state
            self.emit(StateChanged(state=state, previous=previous, turn=self.turn))

    def _start_user_turn(self) -> None:
        self.turn += 1
        self.counters.turns += 1
        self._record = _TurnRecord(turn=self.turn)
        self._stream = self.pipeline.encoder.stream(
            SAMPLE_RATE, semantic_right_context_s=self.config.tokenizer_right_context_s
        )
        preroll = np.concatenate(list(self._preroll))
        self._turn_samples = preroll.shape[0]
        self._speech_end_s = self._turn_samples / SAMPLE_RATE
        self._record.speech_end_wall = time.perf_counter()
        self._stream.feed(preroll)
        self._set_state(ConversationState.USER_SPEAKING)

    def _feed_tokenizer(self, frame: np.ndarray, speech: bool) -> None:
        self._stream.feed(frame)
        self._turn_samples += frame.shape[0]
        if speech:
            self._speech_end_s = self._turn_samples / SAMPLE_RATE
            assert self._record is not None
            self._record.speech_end_wall = time.perf_counter()

    def _ids_cover_speech(self, id_count: int) -> bool:
        """Do ``id_count`` ids cover the turn's audio up to the end of its last speech (within one group)?"""
        return id_count / AUDIO_IDS_PER_SECOND >= self._speech_end_s - 0.12

    def _advance_user_turn(self) -> None:
        if self.state is ConversationState.USER_SPEAKING:
            if self._silence_run >= self._frames_pause:
                self._set_state(ConversationState.USER_PAUSED)
                if self.config.speculative:
                    self._start_speculation()
            return
        # USER_PAUSED
        if self._speech_run >= self._frames_min_speech:
            self._discard_speculation("speech resumed")
            self._set_state(ConversationState.USER_SPEAKING)
        elif self._silence_run >= self._frames_end:
            self._end_user_turn()
        elif self.config.speculative:
            job = self._speculative
            ids = len(self._stream.result)
            if job is None or (not self._ids_cover_speech(job.audio_ids_used) and self._ids_cover_speech(ids)):
                self._discard_speculation("superseded")
                self._start_speculation()

    def _new_job(self, audio_ids: list[int], speculative: bool) -> ReplyJob:
        messages, tokens = self.context.messages(audio_ids)
        assert self._record is not None
        self._record.context_tokens = tokens
        job = ReplyJob(
            turn=self.turn,
            messages=messages,
            audio_ids_used=len(audio_ids),
            llm=self.pipeline.llm,
            tts=self.pipeline.decoder,
            config=self.config,
            lock=self.lock,
            sink=self._on_job_output,
            on_finished=self._on_job_finished,
            speculative=speculative,
        )
        self.workers.submit(job.run, name=f"{'speculative ' if speculative else ''}reply to turn {self.turn}")
        return job

    def _start_speculation(self) -> None:
        audio_ids = list(self._stream.result)
        if not audio_ids:
            return  # nothing tokenized yet; the next frames will try again
        self._speculative = self._new_job(audio_ids, speculative=True)
        assert self._record is not None
        self._record.started += 1
        self.counters.speculative_started += 1
        self.emit(SpeculationUpdate(turn=self.turn, action="started", reason="pause", audio_ids=len(audio_ids)))

    def _discard_speculation(self, reason: str) -> None:
        job, self._speculative = self._speculative, None
        if job is None:
            return
        job.discard()
        assert self._record is not None
        self._record.discarded += 1
        self.counters.speculative_discarded += 1
        self.emit(SpeculationUpdate(turn=self.turn, action="discarded", reason=reason, audio_ids=job.audio_ids_used))

    def _end_user_turn(self) -> None:
        self._stream.close()
        audio_ids = list(self._stream.result)
        self._stream = None
        record = self._record
        assert record is not None
        record.end_of_turn_wall = time.perf_counter()
        job = self._speculative
        with self.lock:
            if job is not None and job.failed is None and self._ids_cover_speech(job.audio_ids_used):
                self._speculative = None
                record.committed += 1
                self.counters.speculative_committed += 1
                self.emit(
                    SpeculationUpdate(
                        turn=self.turn, action="committed", reason="end of turn", audio_ids=job.audio_ids_used
                    )
                )
                self._reply = job
                self._set_state(ConversationState.BOT_REPLYING)
                record.committed_chunks = job.release()
            else:
                if job is not None:
                    self._discard_speculation("did not cover all the speech")
                self._set_state(ConversationState.BOT_REPLYING)
                if audio_ids:
                    self._reply = self._new_job(audio_ids, speculative=False)
                else:
                    logger.warning("turn %d produced no audio ids (too short); not replying", self.turn)
                    self._reply = None
        self.context.add_user_turn(self.turn, audio_ids)

    # ------------------------------------------------------------------------------------------ replies
    def _on_job_output(self, job: ReplyJob, event: RealtimeEvent) -> None:
        """Released output of a job (called with the lock held)."""
        record = self._record
        if job is not self._reply or record is None:
            return
        if isinstance(event, AudioChunk):
            now = time.perf_counter()
            if record.first_audio_wall is None:
                record.first_audio_wall = now
            start = max(now, record.playback_end_wall)
            record.playback_end_wall = start + event.seconds
            record.schedule.append((start, event.seconds, job.chunk_segments[event.index]))
        self.emit(event)

    def _on_job_finished(self, job: ReplyJob) -> None:
        logger.debug("reply job of turn %d finished (discarded=%s)", job.turn, job.discarded)

    def _maybe_finish_reply(self) -> None:
        job = self._reply
        record = self._record
        with self.lock:
            if job is not None and not job.finished.is_set():
                return
            if record is not None and time.perf_counter() < record.playback_end_wall:
                return
            if job is not None:
                self.context.add_assistant_turn(job.turn, job.text)
            self._emit_metrics(barge_in=False)
            self._reply = None
            self._set_state(ConversationState.SILENCE)

    def report_playback(self, turn: int, played_seconds: float) -> None:
        """A client's report of how much of reply ``turn`` it has played (refines :meth:`played_text`)."""
        with self.lock:
            record = self._record
            if record is not None and record.turn == turn and self._reply is not None:
                record.client_playback = (max(0.0, float(played_seconds)), time.perf_counter())

    def played_text(self, now: float | None = None) -> tuple[str, float]:
        """The part of the current reply heard by ``now`` (wall clock), and its seconds of audio.

        Without client reports, each chunk is taken to play from when it was sent (or when the chunk
        before it ends).  A client that reports its playback position (``report_playback``) is
        believed up to :data:`PLAYBACK_REPORT_HORIZON_S` past its last report, never beyond that
        estimate.
        """
        job, record = self._reply, self._record
        if job is None or record is None:
            return "", 0.0
        now = time.perf_counter() if now is None else now
        heard = [min(max(now - start, 0.0), seconds) for start, seconds, _ in record.schedule]
        if record.client_playback is not None:
            reported, reported_at = record.client_playback
            budget = min(sum(heard), reported + min(now - reported_at, PLAYBACK_REPORT_HORIZON_S))
            for index, (_, seconds, _) in enumerate(record.schedule):
                heard[index] = min(seconds, budget)
                budget -= heard[index]
        played = [0.0] * len(job.segments)
        for (_, _, segment_index), seconds in zip(record.schedule, heard, strict=True):
            played[segment_index] += seconds
        pieces = []
        for segment, seconds in zip(job.segments, played, strict=True):
            if seconds <= 0.0 or segment.seconds <= 0.0:
                break
            if segment.finished and seconds >= segment.seconds - 1e-6:
                pieces.append(segment.text)
                continue
            # Partly played: keep the proportional prefix (a segment still being synthesized counts
            # only the audio made so far, so this may overestimate a little).
            pieces.append(segment.text[: int(len(segment.text) * seconds / segment.seconds)])
            break
        return "".join(pieces), sum(played)

    def _barge_in(self) -> None:
        with self.lock:
            job = self._reply
            text, seconds = self.played_text()
            if job is not None:
                job.discard()
                self.context.add_assistant_turn(job.turn, text)
            self.counters.barge_ins += 1
            self.emit(BargeIn(turn=self.turn, played_text=text, played_seconds=seconds))
            self._emit_metrics(barge_in=True)
            self._reply = None

    def _emit_metrics(self, barge_in: bool) -> None:
        record = self._record
        if record is None:
            return
        first_audio = record.first_audio_wall
        self.emit(
            TurnMetrics(
                turn=record.turn,
                end_of_speech_to_first_audio_s=None if first_audio is None else first_audio - record.speech_end_wall,
                end_of_turn_to_first_audio_s=None
                if first_audio is None or record.end_of_turn_wall is None
                else first_audio - record.end_of_turn_wall,
                speculative_started=record.started,
                speculative_committed=record.committed,
                speculative_discarded=record.discarded,
                committed_audio_chunks=record.committed_chunks,
                barge_in=barge_in,
                session_commit_rate=self.counters.commit_rate,
                session_barge_ins=self.counters.barge_ins,
                context_tokens=record.context_tokens,
                compression_ratio=self.context.compression_ratio(),
            )
        )

    # ------------------------------------------------------------------------------------------ closing
    @property
    def busy_jobs(self) -> list[ReplyJob]:
        """Reply jobs of this conversation that are still working."""
        return [job for job in (self._speculative, self._reply) if job is not None and not job.finished.is_set()]

    def close(self) -> None:
        """Cancel all work of this conversation (jobs stop within a token / chunk)."""
        with self.lock:
            self.closed = True
            for job in (self._speculative, self._reply):
                if job is not None:
                    job.discard()
            self._speculative = None
            self._reply = None
        self.context.close()
        self._stream = None  # an unfinished user turn is dropped with its tokenizer stream
