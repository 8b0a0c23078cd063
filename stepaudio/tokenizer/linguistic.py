"""vq02 linguistic codes (16.67 Hz, 1024 codes): funasr's streaming Paraformer encoder + k-means centroids.

The encoder is the ``dengcunqin/...-online`` Paraformer of the tokenizer folder, built and loaded by
funasr itself from the local path only: ``AutoModel(model=<local folder>, model_path=<local folder>,
disable_update=True)`` -- no model name is ever passed, so nothing can resolve to a hub, and the
version check is off.  It runs exactly as upstream's ``infer_encoder`` does: 16 kHz audio is fed in
strides of ``chunk_size[1] * 960 = 3840`` samples with ``chunk_size = [0, 4, 5]`` and encoder look-back
4, the last (possibly partial) stride with ``is_final=True``; funasr's online frontend and encoder
caches are carried between strides, and of each stride's encoder output only the newest frames (as
many as the stride produced LFR frames) are kept.  Each kept 512-dim frame is mapped to its nearest
centroid (Euclidean) in ``linguistic_tokenizer.npy``.

Offline tokenization *is* this stream (fed at once, then closed), so streaming and offline vq02
codes are identical by construction, and per-stride work is bounded by funasr's look-back cache.

**Dither is forced to 0.** Kaldi fbank dither adds random noise to every frame (funasr's default is
1.0 when the config sets nothing), which would make the codes differ from run to run.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import CheckpointError, CheckpointShapeError

logger = logging.getLogger(__name__)

__all__ = ["LinguisticTokenizer", "LinguisticStream", "LinguisticStreamState"]

CHUNK_SIZE = [0, 4, 5]
ENCODER_CHUNK_LOOK_BACK = 4
DECODER_CHUNK_LOOK_BACK = 1
STRIDE_SAMPLES = CHUNK_SIZE[1] * 960  # 3840 samples = 240 ms = 4 LFR frames


class LinguisticTokenizer:
    """funasr's streaming Paraformer (encoder only is used) and the vq02 k-means centroids."""

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
        self.model, self.frontend, self.model_kwargs = self._load_paraformer(paraformer_folder, folder)
        output_size = int(self.model_kwargs["encoder_conf"]["output_size"])
        if centroids.shape[1] != output_size:
            raise CheckpointShapeError(
                f"{centroids_path} has centroids of dimension {centroids.shape[1]} but the Paraformer encoder "
                f"in {paraformer_folder} outputs {output_size}-dim frames; the files come from different folders",
                folder=folder,
                file=centroids_path,
            )
        self.centroids = torch.from_numpy(centroids.astype(np.float32)).to(device)

    def _load_paraformer(self, paraformer_folder: Path, folder: Path) -> tuple[Any, Any, dict]:
        # funasr prints notices (version, ffmpeg) to stdout while importing and loading; keep stdout
        # clean for callers that write results there (the `stepaudio tokenize` CLI) by sending them to stderr.
        with contextlib.redirect_stdout(sys.stderr):
            return self._load_paraformer_quietly(paraformer_folder, folder)

    def _load_paraformer_quietly(self, paraformer_folder: Path, folder: Path) -> tuple[Any, Any, dict]:
        from funasr import AutoModel

        local = str(paraformer_folder)
        root_level = logging.getLevelName(logging.getLogger().getEffectiveLevel())
        try:
            auto_model = AutoModel(
                model=local,
                model_path=local,  # a local folder: funasr's hub download is skipped entirely
                hub="ms",
                disable_update=True,
                device=self.device.type if self.device.index is None else str(self.device),
                ncpu=torch.get_num_threads(),  # funasr would otherwise change torch's global thread count
                disable_pbar=True,
                log_level=root_level,
                frontend_conf={"dither": 0.0},
                init_param=str(paraformer_folder / "model.pt"),
            )
        except (OSError, RuntimeError, KeyError, ValueError, AssertionError, TypeError) as err:
            raise CheckpointError(
                f"funasr could not build the streaming Paraformer from {paraformer_folder} ({type(err).__name__}: "
                f"{err}); config.yaml/model.pt/am.mvn are corrupt or from another model",
                folder=folder,
                file=paraformer_folder,
            ) from err
        kwargs = auto_model.kwargs
        if type(auto_model.model).__name__ != "ParaformerStreaming" or kwargs.get("frontend") is None:
            raise CheckpointError(
                f"{paraformer_folder}/config.yaml describes model {kwargs.get('model')!r} with frontend "
                f"{type(kwargs.get('frontend')).__name__}; expected ParaformerStreaming with WavFrontendOnline",
                folder=folder,
                file=paraformer_folder / "config.yaml",
            )
        frontend = kwargs["frontend"]
        frontend.dither = 0.0
        logger.info("vq02 streaming Paraformer loaded by funasr from %s on %s (dither 0)", local, self.device)
        return auto_model.model, frontend, kwargs

    def new_cache(self) -> dict:
        """A fresh funasr streaming cache (frontend + encoder state of one utterance)."""
        cache: dict = {}
        self.model.init_cache(
            cache,
            chunk_size=list(CHUNK_SIZE),
            encoder_chunk_look_back=ENCODER_CHUNK_LOOK_BACK,
            decoder_chunk_look_back=DECODER_CHUNK_LOOK_BACK,
            encoder_conf=self.model_kwargs["encoder_conf"],
            frontend_conf=self.model_kwargs["frontend_conf"],
        )
        return cache

    @torch.inference_mode()
    def encode_stride(self, cache: dict, samples: np.ndarray, is_final: bool) -> list[int]:
        """Run one stride (<= 3840 samples) through frontend + encoder; return its vq02 codes."""
        from funasr.utils.load_utils import extract_fbank

        if len(samples) == 0:
            return []
        speech, speech_lengths = extract_fbank(
            [torch.from_numpy(np.ascontiguousarray(samples, dtype=np.float32))],
            data_type="sound",
            frontend=self.frontend,
            cache=cache["frontend"],
            is_final=is_final,
        )
        if speech.numel() == 0 or int(speech_lengths[0]) == 0:
            return []
        speech = speech.to(self.device)
        speech_lengths = speech_lengths.to(self.device)
        encoder_out, _ = self.model.encode_chunk(speech, speech_lengths, cache=cache, is_final=is_final)
        frames = encoder_out[0, -int(speech_lengths[0]) :].float()
        return torch.cdist(frames, self.centroids).argmin(dim=1).tolist()


@dataclass
class LinguisticStreamState:
    """Mutable state of a :class:`LinguisticStream`: funasr's cache and the not-yet-full stride."""

    cache: dict
    pending: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.float32))
    strides_done: int = 0


class LinguisticStream:
    """vq02 codes of 16 kHz audio fed in pieces; equals the offline codes exactly."""

    def __init__(self, tokenizer: LinguisticTokenizer) -> None:
        self.tokenizer = tokenizer
        self.state = LinguisticStreamState(cache=tokenizer.new_cache())

    def feed(self, audio: np.ndarray) -> list[int]:
        """Add samples; encode every complete 3840-sample stride."""
        state = self.state
        state.pending = np.concatenate([state.pending, audio]) if len(state.pending) else np.asarray(audio)
        codes: list[int] = []
        while len(state.pending) >= STRIDE_SAMPLES:
            stride, state.pending = state.pending[:STRIDE_SAMPLES], state.pending[STRIDE_SAMPLES:]
            codes.extend(self.tokenizer.encode_stride(state.cache, stride, is_final=False))
            state.strides_done += 1
        return codes

    def flush(self) -> list[int]:
        """Encode the last partial stride with ``is_final=True`` (nothing when it is empty, as upstream)."""
        state = self.state
        codes = self.tokenizer.encode_stride(state.cache, state.pending, is_final=True)
        state.pending = np.zeros(0, dtype=np.float32)
        return codes
