"""Helpers of the realtime tests: a fixture pipeline, scripted timelines, an event log, a controller harness."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile

from stepaudio.realtime import FRAME_SAMPLES, SAMPLE_RATE, RealtimeConfig
from stepaudio.realtime.events import RealtimeEvent

SPEECH_CLIP = "BAC009S0764W0121.wav"


def fixture_pipeline(tokenizer_dir: Path, tts_dir: Path, chat_dir: Path, speakers_dir: Path):
    """A ``StepAudio`` over the tiny fixture folders with short TTS segments (the fixture rarely stops)."""
    from stepaudio.assembly import ModelSettings, load_pipeline

    settings = ModelSettings(
        device="cpu",
        tokenizer_path=tokenizer_dir,
        tts_path=tts_dir,
        chat_path=chat_dir,
        speakers_dir=speakers_dir,
        max_speech_seconds=0.6,
    )
    return load_pipeline(None, settings)


def fixture_config(**overrides) -> RealtimeConfig:
    """Short replies and transcripts (the fixture chat model never emits end-of-turn)."""
    settings = dict(
        max_new_tokens=10,
        transcript_max_new_tokens=4,
        max_sentence_chars=12,
        do_sample=False,
        pause_ms=200,
        end_of_turn_ms=1500,
    )
    settings.update(overrides)
    return RealtimeConfig(**settings)


def speech_audio(shared_audio_dir: Path, seconds: float) -> np.ndarray:
    """The first ``seconds`` of a 16 kHz AISHELL clip, float32."""
    audio, rate = soundfile.read(shared_audio_dir / SPEECH_CLIP, dtype="float32")
    assert rate == SAMPLE_RATE
    return audio[: int(seconds * SAMPLE_RATE)]


@dataclass
class Timeline:
    """Audio + the speech intervals a :class:`ScriptedVAD` reports, built piece by piece."""

    pieces: list[np.ndarray] = field(default_factory=list)
    speech: list[tuple[float, float]] = field(default_factory=list)

    @property
    def seconds(self) -> float:
        return sum(piece.shape[0] for piece in self.pieces) / SAMPLE_RATE

    def talk(self, audio: np.ndarray) -> "Timeline":
        start = self.seconds
        self.pieces.append(audio.astype(np.float32))
        self.speech.append((start, self.seconds))
        return self

    def silence(self, seconds: float) -> "Timeline":
        noise = np.random.default_rng(len(self.pieces)).normal(0.0, 1e-3, int(seconds * SAMPLE_RATE))
        self.pieces.append(noise.astype(np.float32))
        return self


class EventLog:
    """Collects events (thread-safe append) with helpers to select them by type."""

    def __init__(self) -> None:
        self.events: list[RealtimeEvent] = []

    def __call__(self, event: RealtimeEvent) -> None:
        self.events.append(event)

    def of(self, kind: type) -> list:
        return [event for event in list(self.events) if isinstance(event, kind)]


FRAME_SECONDS = FRAME_SAMPLES / SAMPLE_RATE


class FakeClock:
    """A clock that moves only when told (seconds)."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class ControllerHarness:
    """One :class:`TurnController` driven on the test's thread: a fake clock, model work only when told.

    Every frame advances the clock by 32 ms.  With ``tokenize_live`` (default) the tokenizer lane runs
    after each frame, as a fast machine would; replies and transcripts run only on :meth:`run_models`
    (or ``workers.run_next()``), so a test decides when model output arrives.  Workers may be shared by
    several harnesses (several sessions on one model queue).
    """

    def __init__(self, pipeline, config: RealtimeConfig, *, workers=None, clock=None, tokenize_live: bool = True):
        from stepaudio.realtime import Inbox, ManualWorkers, TurnController

        self.clock = clock if clock is not None else FakeClock()
        self.inbox = Inbox()
        self.lane = ManualWorkers()
        self.workers = workers if workers is not None else ManualWorkers()
        self.log = EventLog()
        self.tokenize_live = tokenize_live
        self.controller = TurnController(
            pipeline,
            config,
            workers=self.workers,
            tokenizer_lane=self.lane,
            post=self.inbox.post,
            emit=self.log,
            clock=self.clock,
        )

    @property
    def state(self):
        return self.controller.state

    def deliver(self) -> int:
        """Hand the controller everything posted so far (and what that posts); returns events handled."""
        handled = 0
        while events := self.inbox.take_all():
            for event in events:
                self.controller.handle(event)
                handled += 1
        return handled

    def frame(self, samples: np.ndarray, speech: bool) -> None:
        from stepaudio.realtime.inputs import VoiceFrame

        self.clock.advance(FRAME_SECONDS)
        self.controller.handle(VoiceFrame(samples, 1.0 if speech else 0.0))
        if self.tokenize_live:
            self.lane.run_all()
        self.deliver()

    def talk(self, audio: np.ndarray) -> None:
        usable = audio.shape[0] // FRAME_SAMPLES * FRAME_SAMPLES
        for start in range(0, usable, FRAME_SAMPLES):
            self.frame(audio[start : start + FRAME_SAMPLES], True)

    def silence(self, seconds: float) -> None:
        noise = np.random.default_rng(7).normal(0.0, 1e-3, FRAME_SAMPLES).astype(np.float32)
        for _ in range(round(seconds / FRAME_SECONDS)):
            self.frame(noise, False)

    def silence_until(self, done: Callable[[], bool], max_seconds: float = 60.0) -> None:
        """Silent frames (a live microphone never stops) until ``done()``; fails after ``max_seconds``."""
        noise = np.random.default_rng(7).normal(0.0, 1e-3, FRAME_SAMPLES).astype(np.float32)
        for _ in range(round(max_seconds / FRAME_SECONDS)):
            if done():
                return
            self.frame(noise, False)
        raise AssertionError(f"not done after {max_seconds} s of silence; state {self.state}")

    def run_tokenizer(self) -> None:
        self.lane.run_all()
        self.deliver()

    def run_models(self) -> None:
        """Run every waiting tokenizer, reply and transcript job (and what they lead to) to the end."""
        while self.lane.pending_jobs or self.workers.pending_jobs or len(self.inbox):
            self.lane.run_all()
            self.workers.run_all()
            self.deliver()

    def finish_turn(self, max_seconds: float = 60.0) -> None:
        """End of turn, reply generated, reply played: silence until the controller is back in Silence."""
        from stepaudio.realtime import ConversationState

        def done() -> bool:
            self.run_models()
            return self.state is ConversationState.SILENCE

        self.silence_until(done, max_seconds)
