"""The streaming tokenizer session: resample, loudness, vq02 + vq06 streams, 2:3 regrouping as groups complete."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..audio import PEAK_FLOOR, TARGET_PEAK, as_waveform, check_finite, scale_to_peak, to_mono
from ..resample import ResamplerStream
from ..streaming import Stream
from .interleave import GROUP_LINGUISTIC, GROUP_SEMANTIC, interleave
from .linguistic import LinguisticStream
from .semantic import SemanticStream

__all__ = ["TokenizerStream", "TokenizerStreamState"]

TARGET_RATE = 16000


@dataclass
class TokenizerStreamState:
    """Everything a tokenizer session holds between chunks.

    Attributes:
        resampler: the streaming resampler to 16 kHz (``None`` for 16 kHz input); its output is within
            1e-6 of :func:`stepaudio.audio.resample` of the whole input.
        vq02_pending / vq06_pending: codes not yet part of a complete 2+3 group.
        samples_in: input samples received (at the input rate).
        ids_out: interleaved ids returned so far.
        running_peak: with ``causal_gain``, the largest ``|sample|`` of the 16 kHz audio received so
            far (the current chunk included), else 0.
        gain: the current loudness gain ``0.999 / max(peak, 0.01)``: constant for a ``peak`` given in
            advance (applied to every chunk as it arrives); with ``causal_gain``, of ``running_peak``
            (it only falls as louder audio arrives; the inner streams apply it when they encode,
            each tracking the same peak of the same samples); ``None`` when the stream does not
            normalise.
    """

    resampler: ResamplerStream | None
    vq02_pending: list[int] = field(default_factory=list)
    vq06_pending: list[int] = field(default_factory=list)
    samples_in: int = 0
    ids_out: int = 0
    running_peak: float = 0.0
    gain: float | None = None


class TokenizerStream(Stream[object, list[int]]):
    """``feed(chunk) -> new interleaved ids``; ``close() -> the rest`` (see ``StepAudioTokenizer.stream``).

    Chunks are float arrays/tensors ``[T]`` or ``[C, T]`` or int16/int32 PCM at the session's sample
    rate, of any length (also empty).  All-zero chunks are fine mid-stream.  ``result`` collects every
    id returned; ``reset()`` starts a new clip (state, inner streams and ``result``).

    Args:
        sample_rate: rate of the chunks.
        linguistic / semantic: the vq02 / vq06 streams (closed and reset with this stream); built
            with ``causal_gain=True`` they normalise the loudness with the running peak.
        peak: the 16 kHz peak of the clip, known in advance (``None``: unknown); not with causal gain.
    """

    def __init__(
        self,
        sample_rate: int,
        linguistic: LinguisticStream,
        semantic: SemanticStream,
        peak: float | None = None,
    ) -> None:
        super().__init__()
        causal_gain = linguistic.causal_gain
        if semantic.causal_gain != causal_gain:
            raise ValueError("the vq02 and vq06 streams must both use causal_gain or neither")
        if peak is not None and causal_gain:
            raise ValueError("a known peak and causal_gain exclude each other")  # the public API words it for users
        self.sample_rate = sample_rate
        self.peak = peak
        self.causal_gain = causal_gain
        self.linguistic = linguistic
        self.semantic = semantic
        self.state = self._initial_state()
        self.result: list[int] = []

    def _initial_state(self) -> TokenizerStreamState:
        resampler = ResamplerStream(self.sample_rate, TARGET_RATE) if self.sample_rate != TARGET_RATE else None
        gain = None if self.peak is None else TARGET_PEAK / max(self.peak, PEAK_FLOOR)
        return TokenizerStreamState(resampler=resampler, gain=gain)

    def _reset(self) -> None:
        self.state = self._initial_state()
        self.linguistic.reset()
        self.semantic.reset()
        self.result = []

    def _to_16k(self, chunk: object, last: bool) -> np.ndarray:
        state = self.state
        if chunk is None:
            mono = np.zeros(0, dtype=np.float32)
        else:
            waveform = as_waveform(chunk)
            check_finite(waveform, "stream chunk")
            mono = to_mono(waveform)
        state.samples_in += mono.shape[0]
        if state.resampler is not None:
            mono = state.resampler.feed(mono)
            if last:
                mono = np.concatenate([mono, state.resampler.close()])
        mono = np.ascontiguousarray(mono, dtype=np.float32)
        if self.causal_gain:  # the inner streams scale at encode time (see StepAudioTokenizer.stream)
            if mono.shape[0]:
                state.running_peak = max(state.running_peak, float(np.max(np.abs(mono))))
            state.gain = TARGET_PEAK / max(state.running_peak, PEAK_FLOOR)
            return mono
        if self.peak is not None:
            return scale_to_peak(mono, self.peak)
        return mono

    def _regroup(self, vq02: list[int], vq06: list[int]) -> list[int]:
        state = self.state
        state.vq02_pending.extend(vq02)
        state.vq06_pending.extend(vq06)
        groups = min(len(state.vq02_pending) // GROUP_LINGUISTIC, len(state.vq06_pending) // GROUP_SEMANTIC)
        ids = interleave(state.vq02_pending[: groups * GROUP_LINGUISTIC], state.vq06_pending[: groups * GROUP_SEMANTIC])
        del state.vq02_pending[: groups * GROUP_LINGUISTIC]
        del state.vq06_pending[: groups * GROUP_SEMANTIC]
        state.ids_out += len(ids)
        self.result.extend(ids)
        return ids

    def _feed(self, piece: object) -> list[int]:
        audio = self._to_16k(piece, last=False)
        return self._regroup(self.linguistic.feed(audio), self.semantic.feed(audio))

    def _flush(self) -> list[int]:
        tail = self._to_16k(None, last=True) if self.state.resampler is not None else np.zeros(0, np.float32)
        vq02 = self.linguistic.feed(tail) + self.linguistic.close()
        vq06 = self.semantic.feed(tail) + self.semantic.close()
        return self._regroup(vq02, vq06)  # codes that do not fill a group are dropped, as offline
