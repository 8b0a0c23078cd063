"""Voice activity detection: a small interface, silero-vad behind it, and a scripted VAD for tests.

A VAD takes 16 kHz mono float32 frames of :data:`~stepaudio.realtime.config.FRAME_SAMPLES` samples
and returns a speech probability per frame.  :class:`SpeechGate` turns probabilities into speech /
silence decisions with hysteresis; the controller applies the minimum durations.

These are stateful per-frame models, not streams (:class:`~stepaudio.streaming.Stream`): every frame
gets its answer at once (nothing is held back, so there is no ``close``), but each keeps state from frame
to frame (recurrent state, a frame count, the hysteresis), and ``reset()`` forgets it to start a new
audio stream.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from typing import Protocol

import numpy as np

from ..errors import AudioInputError
from .config import FRAME_SAMPLES, SAMPLE_RATE

logger = logging.getLogger(__name__)

__all__ = ["VoiceActivityDetector", "SileroVAD", "ScriptedVAD", "SpeechGate"]


class VoiceActivityDetector(Protocol):
    """Per-frame speech probability of 16 kHz audio; one instance per audio stream (it keeps state).

    A stateful per-frame model, not a :class:`~stepaudio.streaming.Stream`: ``speech_probability``
    answers each frame at once and ``reset`` starts a new audio stream.
    """

    def speech_probability(self, frame: np.ndarray) -> float:
        """Probability in [0, 1] that ``frame`` (float32 [512] at 16 kHz) contains speech."""
        ...

    def reset(self) -> None:
        """Forget the audio seen so far."""
        ...


def _check_frame(frame: np.ndarray) -> None:
    if frame.shape != (FRAME_SAMPLES,):
        raise AudioInputError(
            f"VAD frames are {FRAME_SAMPLES} samples of 16 kHz mono audio; got an array of shape {frame.shape}. "
            "Use RealtimeSession.push_audio, which cuts audio of any length into frames"
        )


class SileroVAD:
    """silero-vad (the ``silero-vad`` pip package, which ships the model) through onnxruntime.

    A stateful per-frame model, not a :class:`~stepaudio.streaming.Stream`: the network's recurrent
    state and context samples carry over from frame to frame until :meth:`reset`.

    The ONNX form is used (``load_silero_vad(onnx=True)``): no torch JIT, one intra-op thread, and
    the package needs no network and no torchaudio for it.
    """

    def __init__(self) -> None:
        try:
            from silero_vad import load_silero_vad
        except ImportError as error:  # pragma: no cover - depends on the environment
            raise ImportError(
                "stepaudio.realtime needs the silero-vad package for voice activity detection: "
                "pip install silero-vad==6.2.3"
            ) from error
        with warnings.catch_warnings():
            # silero-vad 6.2 locates its model with importlib.resources.path, deprecated in Python 3.11
            warnings.filterwarnings("ignore", category=DeprecationWarning, module="silero_vad")
            self._model = load_silero_vad(onnx=True)

    def speech_probability(self, frame: np.ndarray) -> float:
        import torch

        _check_frame(frame)
        return float(self._model(torch.from_numpy(np.ascontiguousarray(frame, dtype=np.float32)), SAMPLE_RATE))

    def reset(self) -> None:
        """Forget the audio seen so far (the model's recurrent state)."""
        self._model.reset_states()


class ScriptedVAD:
    """Speech probability from a known timeline: 1.0 inside ``speech`` intervals, 0.0 outside.

    For tests and benchmarks that need exact, repeatable turn boundaries on any audio (the fixture
    models' noise or synthetic tones).  A stateful per-frame model, not a
    :class:`~stepaudio.streaming.Stream`: time is counted in frames seen since the last :meth:`reset`.

    Args:
        speech: ``(start_s, end_s)`` intervals of speech, in seconds from the start of the stream.
    """

    def __init__(self, speech: Sequence[tuple[float, float]]) -> None:
        self.speech = [(float(start), float(end)) for start, end in speech]
        self.frames_seen = 0

    def speech_probability(self, frame: np.ndarray) -> float:
        _check_frame(frame)
        middle_s = (self.frames_seen + 0.5) * FRAME_SAMPLES / SAMPLE_RATE
        self.frames_seen += 1
        return 1.0 if any(start <= middle_s < end for start, end in self.speech) else 0.0

    def reset(self) -> None:
        """Start counting time from 0 again."""
        self.frames_seen = 0


class SpeechGate:
    """Probabilities -> speech/silence decisions with hysteresis (enter at ``threshold``, leave below ``negative``).

    A stateful per-frame model, not a :class:`~stepaudio.streaming.Stream`: the decision of the last
    frame (``speaking``) is its state until :meth:`reset`.
    """

    def __init__(self, threshold: float, negative_threshold: float) -> None:
        self.threshold = threshold
        self.negative_threshold = negative_threshold
        self.speaking = False

    def update(self, probability: float) -> bool:
        """Decision for one frame's probability."""
        if self.speaking:
            self.speaking = probability >= self.negative_threshold
        else:
            self.speaking = probability >= self.threshold
        return self.speaking

    def reset(self) -> None:
        """Back to silence, as a new gate."""
        self.speaking = False
