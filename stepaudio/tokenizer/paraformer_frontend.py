"""The streaming Paraformer's online frontend: Kaldi fbank -> LFR stacking -> CMVN, stride by stride.

The original (funasr's ``WavFrontendOnline`` as vendored by Step-Audio) decides per stride which LFR
frames exist, and the encoder's chunked attention depends on which frames arrive together, so this
module reproduces that bookkeeping exactly rather than computing the features of the whole clip at
once.  Per stride of new samples:

1. The samples are appended to the carried-over samples; ``frames = 1 + (len - 400) // 160`` complete
   25 ms / 10 ms frames are cut (none below 400 samples) and the samples after the last frame start
   are carried over.  The frames' Kaldi fbank (80 bins, the configured window, energy floor 0, dither
   0, samples scaled by 32768) comes from :func:`stepaudio.kaldi_fbank.kaldi_fbank`.
2. Before the first frames, the LFR history is seeded with ``(lfr_m - 1) // 2`` copies of the first
   frame.  With ``history + frames >= lfr_m`` the frames are appended to the history and LFR frames
   are stacked: ``ceil((T - (lfr_m - 1) // 2) / lfr_n)`` of them, frame ``i`` = rows
   ``[i * lfr_n, i * lfr_n + lfr_m)``; in a non-final stride stacking stops at the first incomplete
   window, in the final stride incomplete windows are completed by repeating the last row.  The new
   history starts at row ``min(T - 1, lfr_n * stacked)``.  With fewer rows, the frames only join the
   history and the stride yields nothing (in a final stride that ends the clip).
3. A final stride without new frames stacks the history alone (final rules); when that yields no
   frame the remaining samples (fewer than 400) are dropped, as the original does.
4. CMVN: ``(x + shift) * scale`` with the ``<AddShift>`` / ``<Rescale>`` vectors of ``am.mvn``.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..errors import CheckpointConfigError, CheckpointFileNotFoundError
from ..kaldi_fbank import kaldi_fbank
from .paraformer import ParaformerFrontendConfig

logger = logging.getLogger(__name__)

__all__ = ["read_am_mvn", "OnlineFrontend", "FrontendStreamState", "PCM_SCALE"]

PCM_SCALE = 32768.0
"""Float samples in [-1, 1] are scaled to the int16 range before the fbank, as the original does."""


def read_am_mvn(path: Path, dim: int, folder: Path) -> torch.Tensor:
    """Read ``am.mvn`` (Kaldi nnet text: ``<AddShift>`` and ``<Rescale>`` rows) -> float32 ``[2, dim]``."""
    if not path.is_file():
        raise CheckpointFileNotFoundError(
            f"CMVN file {path} is missing from the Step-Audio-Tokenizer folder {folder}", folder=folder, file=path
        )
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise CheckpointConfigError(f"cannot read {path} ({err}); re-download it", folder=folder, file=path) from err
    vectors: dict[str, list[float]] = {}
    for index, line in enumerate(lines[:-1]):
        words = line.split()
        if words and words[0] in ("<AddShift>", "<Rescale>"):
            row = lines[index + 1].split()
            if len(row) >= 4 and row[0] == "<LearnRateCoef>":
                try:
                    vectors[words[0]] = [float(value) for value in row[3:-1]]
                except ValueError as err:
                    raise CheckpointConfigError(
                        f"{path}: the {words[0]} row holds a non-number ({err}); the file is corrupt",
                        folder=folder,
                        file=path,
                    ) from err
    for name in ("<AddShift>", "<Rescale>"):
        if name not in vectors:
            raise CheckpointConfigError(
                f"{path} has no {name} vector; expected a Kaldi nnet CMVN file with <AddShift> and <Rescale> rows",
                folder=folder,
                file=path,
            )
        if len(vectors[name]) < dim:
            raise CheckpointConfigError(
                f"{path}: the {name} vector has {len(vectors[name])} values but the LFR features have {dim} "
                "(n_mels * lfr_m in config.yaml); am.mvn and config.yaml do not match",
                folder=folder,
                file=path,
            )
    return torch.tensor([vectors["<AddShift>"][:dim], vectors["<Rescale>"][:dim]], dtype=torch.float32)


@dataclass
class FrontendStreamState:
    """What the online frontend carries between strides of one clip.

    Attributes:
        samples: samples after the start of the last cut frame (fewer than one frame shift + frame).
        history: fbank rows not yet consumed by LFR stacking (``None`` before the first frame).
    """

    samples: torch.Tensor = field(default_factory=lambda: torch.zeros(0))
    history: torch.Tensor | None = None


class OnlineFrontend:
    """Kaldi fbank + LFR + CMVN of the streaming Paraformer, one stride at a time (see module docstring)."""

    def __init__(self, config: ParaformerFrontendConfig, cmvn: torch.Tensor) -> None:
        self.config = config
        self.cmvn = cmvn
        self.lfr_left = (config.lfr_m - 1) // 2
        if config.dither:
            logger.warning(
                "the Paraformer config.yaml sets dither=%s; stepaudio computes the fbank with dither 0 so that "
                "vq02 codes are deterministic (the original would add random noise)",
                config.dither,
            )

    @property
    def output_size(self) -> int:
        return self.config.n_mels * self.config.lfr_m

    def new_state(self) -> FrontendStreamState:
        return FrontendStreamState()

    def _fbank(self, samples: torch.Tensor) -> torch.Tensor:
        return kaldi_fbank(
            samples * PCM_SCALE,
            sample_rate=float(self.config.fs),
            num_mel_bins=self.config.n_mels,
            frame_length_ms=float(self.config.frame_length),
            frame_shift_ms=float(self.config.frame_shift),
            window_type=self.config.window,
            dither=0.0,
            energy_floor=0.0,
        )

    def _stack(self, rows: torch.Tensor, final: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """LFR-stack ``rows``; returns (frames ``[n, lfr_m * bins]``, the new history)."""
        lfr_m, lfr_n = self.config.lfr_m, self.config.lfr_n
        total = rows.shape[0]
        wanted = max(0, math.ceil((total - self.lfr_left) / lfr_n))
        stacked = []
        next_start = wanted
        for index in range(wanted):
            start = index * lfr_n
            if start + lfr_m <= total:
                stacked.append(rows[start : start + lfr_m].reshape(-1))
            elif final:
                window = rows[start:]
                pad = rows[-1:].expand(lfr_m - window.shape[0], -1)
                stacked.append(torch.cat((window, pad)).reshape(-1))
            else:
                next_start = index
                break
        history = rows[min(total - 1, next_start * lfr_n) :]
        if not stacked:
            return rows.new_zeros(0, lfr_m * rows.shape[1]), history
        return torch.stack(stacked), history

    def _normalise(self, frames: torch.Tensor) -> torch.Tensor:
        return (frames + self.cmvn[0]) * self.cmvn[1]

    def feed(self, state: FrontendStreamState, stride: torch.Tensor, final: bool) -> torch.Tensor:
        """Features ``[n, lfr_m * n_mels]`` (``n`` may be 0) for one stride of 16 kHz samples ``[S]``."""
        frame_len, shift = self.config.frame_samples, self.config.shift_samples
        samples = torch.cat((state.samples, stride.to(torch.float32)))
        count = 1 + (samples.shape[0] - frame_len) // shift if samples.shape[0] >= frame_len else 0
        state.samples = samples[count * shift :] if count else samples
        empty = torch.zeros(0, self.output_size)
        if count:
            rows = self._fbank(samples[: (count - 1) * shift + frame_len])
            if state.history is None:
                state.history = rows[:1].expand(self.lfr_left, -1).clone()
            if rows.shape[0] + state.history.shape[0] < self.config.lfr_m:
                state.history = torch.cat((state.history, rows))
                return empty
            frames, state.history = self._stack(torch.cat((state.history, rows)), final)
            return self._normalise(frames)
        if not final or state.history is None:
            return empty
        # A final stride without a complete frame holds fewer than 400 samples; when the history alone
        # stacks to nothing the original drops them (its "skip < 480 samples" rule), and so do we.
        frames, state.history = self._stack(state.history, final=True)
        return self._normalise(frames) if frames.shape[0] else empty


def pcm_strides(audio: np.ndarray, stride: int) -> list[tuple[np.ndarray, bool]]:
    """Cut a whole clip into the original's strides: full strides, then the rest as the final one.

    A clip whose length is a multiple of ``stride`` has no final stride (the original stops when the
    final piece is empty), so its last full stride is not treated as final.
    """
    count = len(audio) // stride
    pieces = [(audio[i * stride : (i + 1) * stride], False) for i in range(count)]
    if len(audio) % stride:
        pieces.append((audio[count * stride :], True))
    return pieces
