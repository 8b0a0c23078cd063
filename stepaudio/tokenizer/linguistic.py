"""vq02 linguistic codes (16.67 Hz, 1024 codes): the native streaming Paraformer encoder + k-means centroids.

The encoder of the ``dengcunqin/...-online`` Paraformer in the tokenizer folder is rebuilt natively
(:mod:`stepaudio.tokenizer.paraformer`, no funasr) and run exactly as Step-Audio runs it: 16 kHz
audio in strides of ``chunk_size[1] * 960 = 3840`` samples with ``chunk_size = [0, 4, 5]`` and encoder
look-back 4, the last partial stride as the final one; the online frontend
(:mod:`stepaudio.tokenizer.paraformer_frontend`) and the encoder carry their state between strides,
and each stride's newest output frames are mapped to the nearest centroid (Euclidean, ``torch.cdist``)
of ``linguistic_tokenizer.npy``.

Offline tokenization is the same stride sequence, so streaming and offline vq02 codes are identical by
construction; per-stride work is bounded by the look-back cache.  Several clips can be encoded
together (:meth:`LinguisticTokenizer.encode_batch`): their full strides run as one batch, in lock step,
and each clip's final stride on its own, giving the same codes as one clip at a time.

**Dither is 0.**  The official ``config.yaml`` states ``dither: 0``; if a folder sets another value the
fbank still uses 0 (with one warning), because dither is random noise and would make codes differ from
run to run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..audio import scale_to_peak
from ..errors import CheckpointShapeError
from ..streaming import Stream
from .paraformer import EncoderStreamState, load_paraformer_encoder
from .paraformer_frontend import FrontendStreamState, OnlineFrontend, pcm_strides, read_am_mvn

logger = logging.getLogger(__name__)

__all__ = ["LinguisticTokenizer", "LinguisticStream", "LinguisticStreamState", "STRIDE_SAMPLES"]

CHUNK_SIZE = (0, 4, 5)
ENCODER_CHUNK_LOOK_BACK = 4
STRIDE_SAMPLES = CHUNK_SIZE[1] * 960  # 3840 samples = 240 ms = 4 LFR frames


@dataclass
class LinguisticStreamState:
    """Mutable state of one clip's vq02 stream.

    Attributes:
        frontend: the online frontend's carried samples and LFR history.
        encoder: the encoder's position, overlap frames and per-layer key/value cache.
        pending: samples of the stride not yet complete.
        strides_done: full strides encoded so far.
        peak: with ``causal_gain``, the largest ``|sample|`` received so far, else 0.
    """

    frontend: FrontendStreamState
    encoder: EncoderStreamState
    pending: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.float32))
    strides_done: int = 0
    peak: float = 0.0


class LinguisticTokenizer:
    """The native streaming Paraformer encoder, its frontend and the vq02 k-means centroids."""

    def __init__(self, paraformer_folder: Path, centroids_path: Path, device: torch.device, folder: Path) -> None:
        centroids = np.load(centroids_path, allow_pickle=False)
        if centroids.ndim != 2 or centroids.shape[0] != 1024:
            raise CheckpointShapeError(
                f"{centroids_path} holds an array of shape {centroids.shape}; expected [1024, D] float32 "
                "k-means centroids (D = 512 in the official file)",
                folder=folder,
                file=centroids_path,
            )
        self.device = device
        self.encoder, frontend_config = load_paraformer_encoder(
            paraformer_folder, folder, device, CHUNK_SIZE, ENCODER_CHUNK_LOOK_BACK
        )
        cmvn = read_am_mvn(paraformer_folder / "am.mvn", frontend_config.n_mels * frontend_config.lfr_m, folder)
        self.frontend = OnlineFrontend(frontend_config, cmvn)
        output_size = self.encoder.config.output_size
        if centroids.shape[1] != output_size:
            raise CheckpointShapeError(
                f"{centroids_path} has centroids of dimension {centroids.shape[1]} but the Paraformer encoder "
                f"in {paraformer_folder} outputs {output_size}-dim frames; the files come from different folders",
                folder=folder,
                file=centroids_path,
            )
        self.centroids = torch.from_numpy(centroids.astype(np.float32))
        logger.info("vq02 streaming Paraformer (native, %d blocks) on %s", self.encoder.config.num_blocks, device)

    # ------------------------------------------------------------------------------------------- pieces
    def new_state(self, batch_size: int = 1) -> LinguisticStreamState:
        """A fresh stream state (frontend + encoder) for one clip."""
        return LinguisticStreamState(self.frontend.new_state(), self.encoder.new_state(batch_size))

    def nearest_centroids(self, frames: torch.Tensor) -> list[int]:
        """Codes of encoder frames ``[n, D]``: index of the nearest centroid (``torch.cdist`` + argmin, on CPU)."""
        if frames.shape[0] == 0:
            return []
        return torch.cdist(frames.float().cpu(), self.centroids).argmin(dim=1).tolist()

    @torch.inference_mode()
    def encode_stride_frames(self, state: LinguisticStreamState, samples: np.ndarray, final: bool) -> torch.Tensor:
        """Encoder output frames ``[n, D]`` of one stride (<= 3840 samples); ``n`` may be 0."""
        features = self.frontend.feed(state.frontend, torch.from_numpy(np.asarray(samples, np.float32)), final)
        if features.shape[0] == 0:
            return torch.zeros(0, self.encoder.config.output_size)
        return self.encoder.forward_stride(features[None].to(self.device), state.encoder)[0]

    def encode_stride(self, state: LinguisticStreamState, samples: np.ndarray, final: bool) -> list[int]:
        """vq02 codes of one stride."""
        return self.nearest_centroids(self.encode_stride_frames(state, samples, final))

    # ------------------------------------------------------------------------------------------ offline
    def encode(self, audio: np.ndarray, on_progress: Callable[[int], object] | None = None) -> list[int]:
        """vq02 codes of one whole 16 kHz clip (one ``cdist`` over all frames, as the original).

        ``on_progress(samples)`` is called after each stride with the number of samples it covered.
        """
        state = self.new_state()
        frames = []
        for piece, final in pcm_strides(audio, STRIDE_SAMPLES):
            frames.append(self.encode_stride_frames(state, piece, final))
            if on_progress is not None:
                on_progress(len(piece))
        return self.nearest_centroids(torch.cat(frames)) if frames else []

    @torch.inference_mode()
    def encode_batch(self, clips: list[np.ndarray]) -> list[list[int]]:
        """vq02 codes of several 16 kHz clips; equal to :meth:`encode` of each.

        Full strides of all clips still running are encoded as one batch (every full stride yields the
        same number of frames, so the rows line up); each clip's final stride is encoded on its own.
        """
        if not clips:
            return []
        plans = [pcm_strides(np.asarray(clip, np.float32), STRIDE_SAMPLES) for clip in clips]
        states = [self.new_state() for _ in clips]
        outputs: list[list[torch.Tensor]] = [[] for _ in clips]
        step = 0
        while True:
            running = [i for i, plan in enumerate(plans) if step < len(plan) and not plan[step][1]]
            if not running:
                break
            # Frame counts depend only on how many full strides came before, so the rows line up.
            features = [
                self.frontend.feed(states[i].frontend, torch.from_numpy(plans[i][step][0]), False) for i in running
            ]
            batch_state = _stack_states([states[i].encoder for i in running])
            encoded = self.encoder.forward_stride(torch.stack(features).to(self.device), batch_state)
            for row, i in enumerate(running):
                states[i].encoder = batch_state.select([row])
                outputs[i].append(encoded[row])
            step += 1
        for i, plan in enumerate(plans):
            if plan and plan[-1][1]:
                outputs[i].append(self.encode_stride_frames(states[i], plan[-1][0], True))
        return [self.nearest_centroids(torch.cat(frames)) if frames else [] for frames in outputs]


def _stack_states(states: list[EncoderStreamState]) -> EncoderStreamState:
    """One batched encoder state from per-clip states that have seen the same number of strides."""

    def cat(tensors: list[torch.Tensor | None]) -> torch.Tensor | None:
        return None if tensors[0] is None else torch.cat(tensors)  # type: ignore[arg-type]

    layers = len(states[0].keys)
    return EncoderStreamState(
        states[0].position,
        torch.cat([s.overlap for s in states]),
        [cat([s.keys[layer] for s in states]) for layer in range(layers)],
        [cat([s.values[layer] for s in states]) for layer in range(layers)],
    )


class LinguisticStream(Stream[np.ndarray, list[int]]):
    """vq02 codes of 16 kHz audio fed in pieces; equals the offline codes exactly.

    ``feed(audio)`` encodes every complete 3840-sample stride and returns its codes; ``close()``
    encodes the last partial stride as the final one (nothing when it is empty, as upstream);
    ``reset()`` starts a new clip.

    With ``causal_gain`` the stream normalises the loudness itself, at encode time: each stride is
    scaled by ``0.999 / max(peak, 0.01)`` with ``peak`` the largest ``|sample|`` received so far
    (including samples after the stride that arrived in the same chunk); see
    ``StepAudioTokenizer.stream``.
    """

    def __init__(self, tokenizer: LinguisticTokenizer, causal_gain: bool = False) -> None:
        super().__init__()
        self.tokenizer = tokenizer
        self.causal_gain = bool(causal_gain)
        self.state = tokenizer.new_state()

    def _reset(self) -> None:
        self.state = self.tokenizer.new_state()

    def _feed(self, audio: np.ndarray) -> list[int]:
        state = self.state
        audio = np.asarray(audio, dtype=np.float32)
        if self.causal_gain and len(audio):
            state.peak = max(state.peak, float(np.max(np.abs(audio))))
        state.pending = np.concatenate([state.pending, audio]) if len(state.pending) else audio
        codes: list[int] = []
        while len(state.pending) >= STRIDE_SAMPLES:
            stride, state.pending = state.pending[:STRIDE_SAMPLES], state.pending[STRIDE_SAMPLES:]
            codes.extend(self.tokenizer.encode_stride(state, self._scaled(stride), final=False))
            state.strides_done += 1
        return codes

    def _flush(self) -> list[int]:
        state = self.state
        if len(state.pending) == 0:
            return []
        codes = self.tokenizer.encode_stride(state, self._scaled(state.pending), final=True)
        state.pending = np.zeros(0, dtype=np.float32)
        return codes

    def _scaled(self, samples: np.ndarray) -> np.ndarray:
        return scale_to_peak(samples, self.state.peak) if self.causal_gain else samples
