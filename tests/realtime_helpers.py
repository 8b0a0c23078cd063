"""Helpers of the realtime tests: a fixture pipeline, scripted timelines, paced frame feeding."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile

from stepaudio.realtime import FRAME_SAMPLES, SAMPLE_RATE, RealtimeConfig
from stepaudio.realtime.events import RealtimeEvent

SPEECH_CLIP = "BAC009S0764W0121.wav"


def fixture_pipeline(tokenizer_dir: Path, tts_dir: Path, chat_dir: Path, speakers_dir: Path):
    """A ``StepAudio`` over the tiny fixture folders with short TTS segments (the fixture rarely stops)."""
    from stepaudio import StepAudio

    pipeline = StepAudio(tokenizer_dir, tts_dir, chat_dir, speakers_dir=speakers_dir, device="cpu")
    pipeline.decoder.max_speech_seconds = 0.6
    return pipeline


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

    def frames(self) -> list[np.ndarray]:
        audio = np.concatenate(self.pieces)
        usable = audio.shape[0] // FRAME_SAMPLES * FRAME_SAMPLES
        return [audio[i : i + FRAME_SAMPLES] for i in range(0, usable, FRAME_SAMPLES)]


def feed_paced(
    process_frame: Callable[[np.ndarray], None],
    frames: Sequence[np.ndarray],
    speed: float = 1.0,
    stop: Callable[[], bool] | None = None,
) -> int:
    """Feed frames no faster than ``speed`` x real time; returns frames fed (stops early when ``stop()``)."""
    start = time.perf_counter()
    for index, frame in enumerate(frames):
        if stop is not None and stop():
            return index
        due = start + index * FRAME_SAMPLES / SAMPLE_RATE / speed
        delay = due - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        process_frame(frame)
    return len(frames)


def feed_silence_until(
    process_frame: Callable[[np.ndarray], None], done: Callable[[], bool], timeout: float = 60.0
) -> bool:
    """Keep feeding silent frames in real time (a live microphone never stops) until ``done()``."""
    silence = np.zeros(FRAME_SAMPLES, np.float32)
    deadline = time.perf_counter() + timeout
    while not done():
        if time.perf_counter() > deadline:
            return False
        process_frame(silence)
        time.sleep(FRAME_SAMPLES / SAMPLE_RATE)
    return True


class EventLog:
    """Collects events (thread-safe append) with helpers to select them by type."""

    def __init__(self) -> None:
        self.events: list[RealtimeEvent] = []

    def __call__(self, event: RealtimeEvent) -> None:
        self.events.append(event)

    def of(self, kind: type) -> list:
        return [event for event in list(self.events) if isinstance(event, kind)]

    def wait_for(self, predicate: Callable[[], bool], timeout: float) -> bool:
        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            if predicate():
                return True
            time.sleep(0.01)
        return predicate()
