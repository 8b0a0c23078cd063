"""The streaming tokenizer session: resample, vq02 + vq06 streams, 2:3 regrouping as groups complete."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..audio import as_waveform, check_finite, to_mono
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
    """

    resampler: ResamplerStream | None
    vq02_pending: list[int] = field(default_factory=list)
    vq06_pending: list[int] = field(default_factory=list)
    samples_in: int = 0
    ids_out: int = 0


class TokenizerStream(Stream[object, list[int]]):
    """``feed(chunk) -> new interleaved ids``; ``close() -> the rest`` (see ``StepAudioTokenizer.stream``).

    Chunks are float arrays/tensors ``[T]`` or ``[C, T]`` or int16/int32 PCM at the session's sample
    rate, of any length (also empty).  All-zero chunks are fine mid-stream.
    """

    def __init__(
        self,
        sample_rate: int,
        linguistic: LinguisticStream,
        semantic: SemanticStream,
        gain: float | None,
    ) -> None:
        super().__init__()
        resampler = ResamplerStream(sample_rate, TARGET_RATE) if sample_rate != TARGET_RATE else None
        self.sample_rate = sample_rate
        self.gain = gain
        self.linguistic = linguistic
        self.semantic = semantic
        self.state = TokenizerStreamState(resampler=resampler)
        self.result: list[int] = []

    def _to_16k(self, chunk: object, last: bool) -> np.ndarray:
        if chunk is None:
            mono = np.zeros(0, dtype=np.float32)
        else:
            waveform = as_waveform(chunk)
            check_finite(waveform, "stream chunk")
            mono = to_mono(waveform)
        self.state.samples_in += mono.shape[0]
        if self.state.resampler is not None:
            mono = self.state.resampler.feed(mono)
            if last:
                mono = np.concatenate([mono, self.state.resampler.close()])
        if self.gain is not None:
            mono = (mono * np.float32(self.gain)).astype(np.float32)
        return np.ascontiguousarray(mono, dtype=np.float32)

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
        vq02 = self.linguistic.feed(tail) + self.linguistic.flush()
        vq06 = self.semantic.feed(tail) + self.semantic.flush()
        return self._regroup(vq02, vq06)  # codes that do not fill a group are dropped, as offline
