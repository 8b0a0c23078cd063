"""``TurnController``: the one owner of a conversation's turn state, a state machine over one input queue.

The controller consumes typed input events (:mod:`stepaudio.realtime.inputs`) with
:meth:`TurnController.handle`, always on one thread, and tells the client what happens through
``emit`` (typed :mod:`~stepaudio.realtime.events`).  It never blocks and never waits for a model:
model work (the tokenizer stream, offline re-tokenization, replies, transcripts) runs on workers that
only post events back.  Time comes from an injected ``clock``, so tests drive a conversation frame by
frame with a fake clock and :class:`~stepaudio.realtime.workers.ManualWorkers`, without sleeping.

States (:class:`~stepaudio.realtime.events.ConversationState`):

* **Silence -> UserSpeaking** after ``min_speech_ms`` of speech: a user turn starts; its audio (with
  ``preroll_ms`` from before the detected start) goes to a tokenizer stream on the session's
  *tokenizer lane*, scaled by the stream's causal gain (``stream_gain``).
* **UserSpeaking -> UserPaused** after ``pause_ms`` of silence: a *speculative* reply starts from the
  ids streamed so far; its output is held back.  The tokenizer lags the audio (vq06 right context),
  so once the streamed ids cover all of the speech, a speculative reply made from fewer ids is replaced
  (``superseded``).
* **UserPaused -> UserSpeaking** when speech resumes: the speculative reply is discarded.
* **UserPaused -> BotReplying** after ``end_of_turn_ms`` of silence: the tokenizer stream is closed
  and, with ``retokenize_turns``, the turn's audio is tokenized again offline with the exact energy
  normalisation.  A speculative reply whose ids covered all of the speech is *committed* (its held
  output is released at once); otherwise the reply starts as soon as the turn's final ids arrive (the
  offline ids with ``retokenize_turns``, else the stream's): end of turn with lagging tokens simply
  waits for them.  The history keeps the final ids, later the transcript.
* **BotReplying -> Silence** when the reply is generated and its audio has played (a deadline the
  session loop turns into a :class:`~stepaudio.realtime.inputs.Tick`).
* **Barge-in**: ``barge_in_ms`` of speech during BotReplying drops the reply's output at once (no
  chunk is emitted after it, since only this thread emits), cancels its work, keeps only the played
  part of the reply in the history, and starts a new user turn.

Playback is estimated from when each chunk was emitted (a client plays chunks back to back as they
arrive), refined by the client's own reports (:class:`~stepaudio.realtime.inputs.PlaybackReport`).
"""

from __future__ import annotations

import collections
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..tokenizer.interleave import AUDIO_TOKENS_PER_SECOND, GROUP_SECONDS, compare_ids
from .config import FRAME_SAMPLES, SAMPLE_RATE, RealtimeConfig
from .context import ChatTranscriber, ConversationContext, Transcriber
from .events import (
    AudioChunk,
    BargeIn,
    ConversationState,
    ErrorEvent,
    RealtimeEvent,
    ReplyTextDelta,
    SpeculationUpdate,
    StateChanged,
    Transcript,
    TurnMetrics,
)
from .inputs import (
    ControllerInput,
    PlaybackReport,
    ReplyAudio,
    ReplyDone,
    ReplySegment,
    ReplySegmentDone,
    ReplyText,
    Tick,
    TokenizerFailed,
    TokensReady,
    TranscriptReady,
    TurnRetokenized,
    VoiceFrame,
)
from .reply import ReplyJob, SpokenSegment
from .vad import SpeechGate
from .workers import JobRunner

logger = logging.getLogger(__name__)

__all__ = ["TurnController", "SessionCounters", "AUDIO_IDS_PER_SECOND", "PLAYBACK_REPORT_HORIZON_S"]

#: Interleaved audio ids per second of audio (the tokenizer's constant, re-exported under its old name).
AUDIO_IDS_PER_SECOND = AUDIO_TOKENS_PER_SECOND
#: A client's playback report is trusted to keep advancing for at most this long after it arrived.
PLAYBACK_REPORT_HORIZON_S = 0.25


@dataclass
class SessionCounters:
    """Running totals of a session (for commit rate and barge-ins)."""

    speculative_started: int = 0
    speculative_committed: int = 0
    speculative_discarded: int = 0
    barge_ins: int = 0
    turns: int = 0
    failed_replies: int = 0

    @property
    def commit_rate(self) -> float | None:
        if self.speculative_started == 0:
            return None
        return self.speculative_committed / self.speculative_started


@dataclass
class _UserTurn:
    """One user turn: its audio, its ids as they arrive, and the measurements of its reply."""

    turn: int
    stream: Any  # the tokenizer stream; touched only by jobs on the tokenizer lane
    audio: list[np.ndarray] = field(default_factory=list)
    samples: int = 0
    speech_end_s: float = 0.0  # turn audio time at the end of the last speech frame
    speech_end_at: float = 0.0  # clock when that frame was handled
    ids: list[int] = field(default_factory=list)  # streamed ids so far
    stream_closed: bool = False
    offline_ids: list[int] | None = None
    retokenize_failed: bool = False
    retokenize_s: float | None = None
    ended_at: float | None = None  # clock at the end-of-turn decision
    reply_pending: bool = False  # the turn ended; the reply starts when the final ids are here
    stored: bool = False  # in the conversation history
    transcribing: bool = False
    cancelled: bool = False  # the session closed: lane jobs of this turn return at once
    # measurements
    first_audio_at: float | None = None
    started: int = 0
    committed: int = 0
    discarded: int = 0
    committed_chunks: int = 0
    context_tokens: int = 0

    def covers_speech(self, id_count: int) -> bool:
        """Do ``id_count`` ids cover the turn's audio up to the end of its last speech (within one group)?"""
        return id_count / AUDIO_IDS_PER_SECOND >= self.speech_end_s - GROUP_SECONDS


@dataclass
class _Reply:
    """The controller's view of one reply job: held-back output, what was emitted, and its timing."""

    job: ReplyJob
    turn: int
    speculative: bool
    audio_ids_used: int
    live: bool = False  # output goes to the client (a committed or non-speculative reply)
    buffer: list[RealtimeEvent] = field(default_factory=list)
    text: str = ""
    segments: list[SpokenSegment] = field(default_factory=list)
    chunks: int = 0
    chunk_segments: list[int] = field(default_factory=list)
    # (clock start, seconds, segment index) of every emitted chunk
    schedule: list[tuple[float, float, int]] = field(default_factory=list)
    playback_end: float = 0.0
    client_playback: tuple[float, float] | None = None  # (played seconds, clock of the report)
    done: bool = False
    error: str | None = None


class TurnController:
    """The turn-taking state machine of one conversation (see the module docstring).

    Args:
        pipeline: a :class:`~stepaudio.StepAudio` (``.tokenizer``, ``.llm``, ``.tts``).
        config: thresholds and generation settings; checked against the models here (reply budget
            vs. the chat model's ``max_seq_len``, the speaker vs. the TTS speakers folder).
        workers: where replies and transcripts run (shared by the sessions of a process).
        tokenizer_lane: where this conversation's tokenizer jobs run, in order (one thread).
        post: puts an input event on this controller's queue (handed to the jobs).
        emit: receives every output event (called on the controller's thread; must not block).
        clock: seconds, monotonic (``time.perf_counter`` by default; tests pass a fake one).
        transcriber: transcripts of past user turns (default: the chat model with the ASR prompt;
            ``config.transcribe_history=False`` keeps past turns as audio ids).

    Raises:
        RealtimeConfigError: the configuration does not fit the loaded models.
    """

    def __init__(
        self,
        pipeline: Any,
        config: RealtimeConfig,
        *,
        workers: JobRunner,
        tokenizer_lane: JobRunner,
        post: Callable[[object], None],
        emit: Callable[[RealtimeEvent], None],
        clock: Callable[[], float] = time.perf_counter,
        transcriber: Transcriber | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.config = config
        self.workers = workers
        self.tokenizer_lane = tokenizer_lane
        self.post = post
        self.emit = emit
        self.clock = clock
        max_prompt_tokens = config.check_models(pipeline)
        if transcriber is None and config.transcribe_history:
            transcriber = ChatTranscriber(pipeline.llm, config.transcript_max_new_tokens)
        self.transcriber = transcriber if config.transcribe_history else None
        self.context = ConversationContext(
            count_text_tokens=lambda text: len(pipeline.llm.tokenizer.encode(text)),
            token_budget=min(config.context_token_budget, max_prompt_tokens),
            count_prompt_tokens=lambda messages: len(pipeline.llm.encode_messages(messages)),
            max_prompt_tokens=max_prompt_tokens,
            system_prompt=config.system_prompt,
        )
        self.gate = SpeechGate(config.vad_threshold, config.vad_negative_threshold)
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
        self._user: _UserTurn | None = None  # the current (or last) user turn
        self._unsettled: dict[int, _UserTurn] = {}  # turns whose final ids or transcript are still to come
        self._replies: dict[int, _Reply] = {}  # jobs that have not reported ReplyDone
        self._speculative: _Reply | None = None
        self._live: _Reply | None = None
        self._job_ids = 0
        self._frames_min_speech = config.frames(config.min_speech_ms)
        self._frames_barge_in = config.frames(config.barge_in_ms)
        self._frames_pause = config.frames(config.pause_ms)
        self._frames_end = config.frames(config.end_of_turn_ms)
        self._handlers: dict[type, Callable[[Any], None]] = {
            VoiceFrame: self._on_voice_frame,
            TokensReady: self._on_tokens,
            TurnRetokenized: self._on_retokenized,
            TokenizerFailed: self._on_tokenizer_failed,
            ReplyText: self._on_reply_text,
            ReplySegment: self._on_reply_segment,
            ReplyAudio: self._on_reply_audio,
            ReplySegmentDone: self._on_segment_done,
            ReplyDone: self._on_reply_done,
            TranscriptReady: self._on_transcript,
            PlaybackReport: self._on_playback_report,
            Tick: self._on_tick,
        }

    # ----------------------------------------------------------------------------------------- entry
    def handle(self, event: ControllerInput) -> None:
        """Advance the conversation by one input event (call from one thread only)."""
        if self.closed:
            return
        handler = self._handlers.get(type(event))
        if handler is None:
            raise TypeError(f"TurnController.handle got {type(event).__name__}; expected an input event")
        handler(event)

    def next_deadline(self) -> float | None:
        """Clock time at which the controller needs a :class:`Tick` if no other input arrives (or None)."""
        live = self._live
        if self.state is ConversationState.BOT_REPLYING and live is not None and live.done:
            return live.playback_end
        return None

    @property
    def busy(self) -> bool:
        """Replies or tokenizer work of this conversation are still under way."""
        return bool(self._replies) or any(
            user.reply_pending or not user.stream_closed for user in self._unsettled.values()
        )

    # ------------------------------------------------------------------------------------ audio input
    def _on_voice_frame(self, frame: VoiceFrame) -> None:
        speech = self.gate.update(frame.speech_probability)
        self.frames_seen += 1
        self._preroll.append(frame.samples)
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
            self._add_turn_audio(frame.samples, speech)
            self._advance_user_turn()

    def _set_state(self, state: ConversationState) -> None:
        previous, self.state = self.state, state
        self.emit(StateChanged(state=state, previous=previous, turn=self.turn))

    def _start_user_turn(self) -> None:
        self.turn += 1
        self.counters.turns += 1
        stream = self.pipeline.tokenizer.stream(
            SAMPLE_RATE,
            causal_gain=self.config.stream_gain,
            semantic_right_context_s=self.config.tokenizer_right_context_s,
        )
        user = _UserTurn(turn=self.turn, stream=stream)
        self._user = user
        self._unsettled[user.turn] = user
        preroll = np.concatenate(list(self._preroll))
        self._add_turn_audio(preroll, speech=True)
        self._set_state(ConversationState.USER_SPEAKING)

    def _add_turn_audio(self, samples: np.ndarray, speech: bool) -> None:
        user = self._user
        assert user is not None
        user.audio.append(samples)
        user.samples += samples.shape[0]
        if speech:
            user.speech_end_s = user.samples / SAMPLE_RATE
            user.speech_end_at = self.clock()
        self._submit_tokenizer_feed(user, samples)

    def _advance_user_turn(self) -> None:
        if self.state is ConversationState.USER_SPEAKING:
            if self._silence_run >= self._frames_pause:
                self._set_state(ConversationState.USER_PAUSED)
                self._maybe_speculate()
            return
        # USER_PAUSED
        if self._speech_run >= self._frames_min_speech:
            self._discard_speculation("speech resumed")
            self._set_state(ConversationState.USER_SPEAKING)
        elif self._silence_run >= self._frames_end:
            self._end_user_turn()
        else:
            self._maybe_speculate()

    # -------------------------------------------------------------------------------- tokenizer lane
    def _submit_tokenizer_feed(self, user: _UserTurn, samples: np.ndarray) -> None:
        post, turn, stream = self.post, user.turn, user.stream

        def feed() -> None:
            if user.cancelled:
                return
            try:
                ids = stream.feed(samples)
            except Exception as error:
                post(TokenizerFailed(turn=turn, error=f"{type(error).__name__}: {error}"))
                raise
            if ids:
                post(TokensReady(turn=turn, ids=tuple(ids)))

        self.tokenizer_lane.submit(feed, name=f"tokenizer feed of turn {turn}")

    def _submit_tokenizer_close(self, user: _UserTurn) -> None:
        post, turn, stream = self.post, user.turn, user.stream
        tokenizer = self.pipeline.tokenizer
        retokenize = self.config.retokenize_turns
        audio = np.concatenate(user.audio)

        def close() -> None:
            if user.cancelled:
                return
            try:
                ids = stream.close()
            except Exception as error:
                post(TokenizerFailed(turn=turn, error=f"{type(error).__name__}: {error}"))
                raise
            post(TokensReady(turn=turn, ids=tuple(ids), final=True))
            if not retokenize:
                return
            started = time.perf_counter()
            try:
                offline = tokenizer.wav2token(audio, SAMPLE_RATE, enable_trim=False, energy_norm=True)[0]
            except Exception as error:  # e.g. a turn too short for the offline tokenizer: the stream's ids are used
                post(TurnRetokenized(turn=turn, ids=None, seconds=time.perf_counter() - started, error=repr(error)))
                return
            post(TurnRetokenized(turn=turn, ids=tuple(offline), seconds=time.perf_counter() - started))

        self.tokenizer_lane.submit(close, name=f"tokenizer close of turn {turn}")

    def _on_tokens(self, event: TokensReady) -> None:
        user = self._unsettled.get(event.turn)
        if user is None:
            return
        user.ids.extend(event.ids)
        if event.final:
            user.stream_closed = True
            self._settle_ids(user)
        if user is self._user and self.state is ConversationState.USER_PAUSED:
            self._maybe_speculate()

    def _on_retokenized(self, event: TurnRetokenized) -> None:
        user = self._unsettled.get(event.turn)
        if user is None:
            return
        user.retokenize_s = event.seconds
        if event.ids is None:
            logger.warning(
                "turn %d could not be tokenized again offline (%s); its streamed ids are used", event.turn, event.error
            )
            user.retokenize_failed = True
        else:
            user.offline_ids = list(event.ids)
        self._settle_ids(user)

    def _on_tokenizer_failed(self, event: TokenizerFailed) -> None:
        user = self._unsettled.pop(event.turn, None)
        if user is None:
            return
        user.cancelled = True
        self.emit(ErrorEvent(code="tokenizer_failed", message=f"tokenizing turn {event.turn} failed: {event.error}"))
        if user is self._user and self.state is not ConversationState.SILENCE:
            self._discard_speculation("the tokenizer failed")
            self._drop_live_reply()
            self._set_state(ConversationState.SILENCE)

    @staticmethod
    def _final_ids(user: _UserTurn, retokenize: bool) -> list[int] | None:
        """The ids the turn ends with (None while they are still to come)."""
        if not user.stream_closed:
            return None
        if retokenize and not user.retokenize_failed:
            return user.offline_ids
        return user.ids

    def _settle_ids(self, user: _UserTurn) -> None:
        """Final ids arrived: start the waiting reply, update the history, start the transcript."""
        ids = self._final_ids(user, self.config.retokenize_turns)
        if ids is None:
            return
        if user.reply_pending:
            user.reply_pending = False
            self._start_reply(user, ids)
        if user.stored:
            self.context.set_user_audio(user.turn, ids)
            self._maybe_transcribe(user, ids)

    # --------------------------------------------------------------------------------------- replies
    def _new_reply(self, user: _UserTurn, audio_ids: Sequence[int], speculative: bool) -> _Reply:
        messages, tokens = self.context.messages(audio_ids)
        user.context_tokens = tokens
        self._job_ids += 1
        job = ReplyJob(self._job_ids, messages, self.pipeline.llm, self.pipeline.tts, self.config, self.post)
        reply = _Reply(job=job, turn=user.turn, speculative=speculative, audio_ids_used=len(audio_ids))
        self._replies[job.job_id] = reply
        kind = "speculative reply" if speculative else "reply"
        self.workers.submit(job.run, name=f"{kind} {job.job_id} to turn {user.turn}")
        return reply

    def _maybe_speculate(self) -> None:
        """In a pause: start a speculative reply, or replace one the streamed ids have outgrown."""
        user = self._user
        if not self.config.speculative or user is None or not user.ids:
            return
        current = self._speculative
        if current is not None:
            if user.covers_speech(current.audio_ids_used) or not user.covers_speech(len(user.ids)):
                return
            self._discard_speculation("superseded")
        self._speculative = self._new_reply(user, user.ids, speculative=True)
        user.started += 1
        self.counters.speculative_started += 1
        self.emit(SpeculationUpdate(turn=user.turn, action="started", reason="pause", audio_ids=len(user.ids)))

    def _discard_speculation(self, reason: str) -> None:
        reply, self._speculative = self._speculative, None
        if reply is None:
            return
        reply.job.cancel()
        reply.buffer.clear()
        if self._user is not None:
            self._user.discarded += 1
        self.counters.speculative_discarded += 1
        self.emit(SpeculationUpdate(turn=reply.turn, action="discarded", reason=reason, audio_ids=reply.audio_ids_used))

    def _end_user_turn(self) -> None:
        user = self._user
        assert user is not None
        user.ended_at = self.clock()
        self._submit_tokenizer_close(user)
        self._set_state(ConversationState.BOT_REPLYING)
        reply = self._speculative
        if reply is not None and reply.error is None and user.covers_speech(reply.audio_ids_used):
            self._speculative = None
            user.committed += 1
            self.counters.speculative_committed += 1
            self.emit(
                SpeculationUpdate(
                    turn=user.turn, action="committed", reason="end of turn", audio_ids=reply.audio_ids_used
                )
            )
            user.committed_chunks = sum(isinstance(event, AudioChunk) for event in reply.buffer)
            self._store_user_turn(user)
            self._go_live(reply)
            self._release(reply)
            return
        if reply is not None:
            self._discard_speculation("did not cover all the speech" if reply.error is None else "failed")
        user.reply_pending = True
        self._settle_ids(user)  # starts the reply now if the final ids are already here

    def _start_reply(self, user: _UserTurn, ids: list[int]) -> None:
        if not ids:
            logger.warning("turn %d produced no audio ids (too short); not replying", user.turn)
            self._store_user_turn(user)
            self._maybe_finish_reply()
            return
        reply = self._new_reply(user, ids, speculative=False)
        self._store_user_turn(user)
        self._go_live(reply)

    def _store_user_turn(self, user: _UserTurn) -> None:
        """Put the user turn into the history (once), with the best ids known now."""
        if user.stored:
            return
        user.stored = True
        ids = self._final_ids(user, self.config.retokenize_turns)
        self.context.add_user_turn(user.turn, ids if ids is not None else user.ids)
        if ids is not None:
            self._maybe_transcribe(user, ids)

    def _maybe_transcribe(self, user: _UserTurn, ids: list[int]) -> None:
        """The turn's final ids are in the history: have them transcribed (the turn is settled after that)."""
        transcriber = self.transcriber
        if user.transcribing:
            return
        if transcriber is None or not ids:
            self._unsettled.pop(user.turn, None)  # nothing more will come for this turn
            return
        user.transcribing = True
        post, turn, audio_ids = self.post, user.turn, list(ids)

        def transcribe() -> None:
            if user.cancelled:
                return
            try:
                text = transcriber.transcribe(audio_ids)
            except Exception as error:
                logger.warning("transcribing turn %d failed (%r); it stays as audio ids", turn, error)
                post(TranscriptReady(turn=turn, text=None, error=repr(error)))
                return
            post(TranscriptReady(turn=turn, text=text))

        self.workers.submit(transcribe, name=f"transcript of turn {turn}")

    def _on_transcript(self, event: TranscriptReady) -> None:
        self._unsettled.pop(event.turn, None)
        if event.text is None:
            return
        self.context.set_transcript(event.turn, event.text)
        self.emit(Transcript(turn=event.turn, text=event.text))

    def _go_live(self, reply: _Reply) -> None:
        reply.live = True
        self._live = reply

    def _release(self, reply: _Reply) -> None:
        """Emit the output a speculative reply held back."""
        buffered, reply.buffer = reply.buffer, []
        for event in buffered:
            self._emit_output(reply, event)

    def _emit_output(self, reply: _Reply, event: RealtimeEvent) -> None:
        if isinstance(event, AudioChunk):
            now = self.clock()
            user = self._user
            if user is not None and user.turn == reply.turn and user.first_audio_at is None:
                user.first_audio_at = now
            start = max(now, reply.playback_end)
            reply.playback_end = start + event.seconds
            reply.schedule.append((start, event.seconds, reply.chunk_segments[event.index]))
        self.emit(event)

    def _output(self, reply: _Reply, event: RealtimeEvent) -> None:
        """Route one piece of a reply's output: emitted when live, held when speculative."""
        if reply.live:
            self._emit_output(reply, event)
        elif reply is self._speculative:
            reply.buffer.append(event)

    def _reply_of(self, job_id: int) -> _Reply | None:
        """The reply a job's event belongs to, unless it was dropped (discarded or interrupted)."""
        reply = self._replies.get(job_id)
        if reply is None or (reply is not self._live and reply is not self._speculative):
            return None
        return reply

    def _on_reply_text(self, event: ReplyText) -> None:
        reply = self._reply_of(event.job)
        if reply is not None:
            reply.text += event.text
            self._output(reply, ReplyTextDelta(turn=reply.turn, text=event.text))

    def _on_reply_segment(self, event: ReplySegment) -> None:
        reply = self._reply_of(event.job)
        if reply is not None:
            reply.segments.append(SpokenSegment(text=event.text))

    def _on_reply_audio(self, event: ReplyAudio) -> None:
        reply = self._reply_of(event.job)
        if reply is None:
            return
        chunk = AudioChunk(
            turn=reply.turn,
            index=reply.chunks,
            sample_rate=event.sample_rate,
            samples=event.samples,
            segment=event.segment,
            segment_text=reply.segments[event.segment].text,
        )
        reply.chunks += 1
        reply.chunk_segments.append(event.segment)
        reply.segments[event.segment].seconds += chunk.seconds
        self._output(reply, chunk)

    def _on_segment_done(self, event: ReplySegmentDone) -> None:
        reply = self._reply_of(event.job)
        if reply is not None:
            reply.segments[event.segment].finished = True

    def _on_reply_done(self, event: ReplyDone) -> None:
        reply = self._replies.pop(event.job, None)
        if reply is None:
            return
        reply.done = True
        reply.error = event.error
        if reply is self._speculative:
            return  # judged at the end of the turn (a failed one is not committed)
        if reply is self._live:
            self._finish_if_failed(reply)
            self._maybe_finish_reply()

    def _finish_if_failed(self, reply: _Reply) -> None:
        if reply.error is not None:
            self.counters.failed_replies += 1
            self.emit(ErrorEvent(code="reply_failed", message=f"reply to turn {reply.turn} failed: {reply.error}"))

    def _drop_live_reply(self) -> None:
        reply, self._live = self._live, None
        if reply is not None:
            reply.job.cancel()

    def _on_tick(self, event: Tick) -> None:
        if self.state is ConversationState.BOT_REPLYING:
            self._maybe_finish_reply()

    def _maybe_finish_reply(self) -> None:
        """BotReplying -> Silence once the reply is generated and its audio has played."""
        user = self._user
        if user is None or user.reply_pending:
            return
        reply = self._live
        if reply is not None and (not reply.done or self.clock() < reply.playback_end):
            return
        if reply is not None:
            self.context.add_assistant_turn(reply.turn, reply.text if reply.error is None else self.played_text()[0])
        self._emit_metrics(barge_in=False)
        self._live = None
        self._set_state(ConversationState.SILENCE)

    # ------------------------------------------------------------------------------------- barge-in
    def _on_playback_report(self, event: PlaybackReport) -> None:
        reply = self._live
        if reply is not None and reply.turn == event.turn:
            reply.client_playback = (max(0.0, float(event.played_seconds)), self.clock())

    def played_text(self, now: float | None = None) -> tuple[str, float]:
        """The part of the live reply heard by ``now`` (clock time), and its seconds of audio.

        Without client reports, each chunk is taken to play from when it was emitted (or when the chunk
        before it ends).  A client that reports its playback position is believed up to
        :data:`PLAYBACK_REPORT_HORIZON_S` past its last report, never beyond that estimate.
        """
        reply = self._live
        if reply is None:
            return "", 0.0
        now = self.clock() if now is None else now
        heard = [min(max(now - start, 0.0), seconds) for start, seconds, _ in reply.schedule]
        if reply.client_playback is not None:
            reported, reported_at = reply.client_playback
            budget = min(sum(heard), reported + min(now - reported_at, PLAYBACK_REPORT_HORIZON_S))
            for index, (_, seconds, _) in enumerate(reply.schedule):
                heard[index] = min(seconds, budget)
                budget -= heard[index]
        played = [0.0] * len(reply.segments)
        for (_, _, segment_index), seconds in zip(reply.schedule, heard, strict=True):
            played[segment_index] += seconds
        pieces = []
        for segment, seconds in zip(reply.segments, played, strict=True):
            if seconds <= 0.0 or segment.seconds <= 0.0:
                if segment.seconds <= 0.0 and segment.finished and pieces:
                    pieces.append(segment.text)  # punctuation between heard segments
                    continue
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
        user = self._user
        reply = self._live
        text, seconds = self.played_text()
        if reply is not None:
            self.context.add_assistant_turn(reply.turn, text)
        self._drop_live_reply()
        if user is not None and user.reply_pending:  # interrupted before the reply could start
            user.reply_pending = False
            self._store_user_turn(user)
        self.counters.barge_ins += 1
        self.emit(BargeIn(turn=self.turn, played_text=text, played_seconds=seconds))
        self._emit_metrics(barge_in=True)

    def _emit_metrics(self, barge_in: bool) -> None:
        user = self._user
        if user is None:
            return
        first_audio = user.first_audio_at
        differing = None
        if user.offline_ids is not None and user.stream_closed:
            mismatched, extra = compare_ids(user.ids, user.offline_ids)
            differing = mismatched + abs(extra)
        self.emit(
            TurnMetrics(
                turn=user.turn,
                end_of_speech_to_first_audio_s=None if first_audio is None else first_audio - user.speech_end_at,
                end_of_turn_to_first_audio_s=None
                if first_audio is None or user.ended_at is None
                else first_audio - user.ended_at,
                speculative_started=user.started,
                speculative_committed=user.committed,
                speculative_discarded=user.discarded,
                committed_audio_chunks=user.committed_chunks,
                barge_in=barge_in,
                session_commit_rate=self.counters.commit_rate,
                session_barge_ins=self.counters.barge_ins,
                context_tokens=user.context_tokens,
                compression_ratio=self.context.compression_ratio(),
                streamed_ids_differing=differing,
                retokenize_s=user.retokenize_s,
            )
        )

    # ---------------------------------------------------------------------------------------- closing
    def close(self) -> None:
        """Cancel all work of this conversation (jobs stop within a token / chunk; lane jobs return at once)."""
        self.closed = True
        for reply in list(self._replies.values()):
            reply.job.cancel()
        for user in self._unsettled.values():
            user.cancelled = True
        self._speculative = None
        self._live = None
