"""Native streaming Paraformer encoder (``SANMEncoderChunkOpt``) of the Step-Audio-Tokenizer folder.

The vq02 codes come from the encoder of the streaming Paraformer-large in
``dengcunqin/speech_paraformer-large_asr_nat-zh-cantonese-en-16k-vocab8501-online``; its decoder,
predictor and token list are not needed.  This module rebuilds that encoder without funasr, with the
official parameter names (``encoder.encoders0.0.self_attn.linear_q_k_v.weight``, ...), and runs it in
the chunked online configuration Step-Audio uses:

* Input: LFR features ``[B, n, 560]`` of one stride (see :mod:`stepaudio.tokenizer.paraformer_frontend`),
  scaled by ``sqrt(output_size)`` and given a sinusoidal position encoding that continues across
  strides (positions count from 1).
* Each window = the last ``chunk_size[0] + chunk_size[2]`` (0 + 5) position-encoded frames of the
  previous windows (zeros before the first stride) followed by the stride's frames.
* Every SANM layer projects the window to q/k/v with one fused linear layer; attention keys and values
  are the layer's cached keys/values of earlier windows followed by the window's own; the cache then
  gains the window's frames except its last ``chunk_size[2]`` and keeps only the newest
  ``look_back * chunk_size[1]`` (4 * 4 = 16).  The FSMN memory (a depthwise convolution over the
  values, kernel 11, zero-padded) sees the current window only.
* Of each window's output only the newest ``n`` frames (one per input LFR frame) are kept.

Layer details: pre-norm LayerNorm (eps 1e-12), no residual around the first layer's attention (its
input is 560-dim), ReLU feed-forward, final LayerNorm.  All arithmetic is float32 in the order the
original uses, so encoder outputs agree with it to float32 rounding.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import (
    CheckpointConfigError,
    CheckpointError,
    CheckpointFileNotFoundError,
    CheckpointKeyError,
    CheckpointShapeError,
)
from ..state_dict_check import find_state_dict_mismatch

__all__ = [
    "ParaformerEncoderConfig",
    "ParaformerFrontendConfig",
    "StreamingParaformerEncoder",
    "EncoderStreamState",
    "read_paraformer_config",
    "load_paraformer_encoder",
    "ENCODER_PREFIX",
]

ENCODER_PREFIX = "encoder."
LAYER_NORM_EPS = 1e-12


@dataclass(frozen=True)
class ParaformerEncoderConfig:
    """``encoder_conf`` of the Paraformer ``config.yaml`` (official: 560 -> 512, 4 heads, 2048, 50 blocks)."""

    input_size: int = 560
    output_size: int = 512
    attention_heads: int = 4
    linear_units: int = 2048
    num_blocks: int = 50
    kernel_size: int = 11
    sanm_shfit: int = 0
    normalize_before: bool = True


@dataclass(frozen=True)
class ParaformerFrontendConfig:
    """``frontend_conf`` of the Paraformer ``config.yaml`` (``WavFrontendOnline``)."""

    fs: int = 16000
    window: str = "hamming"
    n_mels: int = 80
    frame_length: int = 25
    frame_shift: int = 10
    lfr_m: int = 7
    lfr_n: int = 6
    dither: float | None = None  # None: not stated in config.yaml (funasr would then use 1.0)
    snip_edges: bool = True

    @property
    def frame_samples(self) -> int:
        return int(self.frame_length * self.fs / 1000)

    @property
    def shift_samples(self) -> int:
        return int(self.frame_shift * self.fs / 1000)


# ------------------------------------------------------------------------------------------------ config
_REQUIRED = {
    "model": "ParaformerStreaming",
    "encoder": "SANMEncoderChunkOpt",
    "frontend": "WavFrontendOnline",
}
_ENCODER_FIXED = {
    "input_layer": "pe_online",
    "selfattention_layer_type": "sanm",
    "positionwise_layer_type": "linear",
    "concat_after": False,
}
_WINDOWS = ("hamming", "hanning", "povey", "rectangular", "blackman")


def read_paraformer_config(config_path: Path, folder: Path) -> tuple[ParaformerEncoderConfig, ParaformerFrontendConfig]:
    """Read the encoder and frontend settings from the Paraformer ``config.yaml``.

    Only what the encoder and frontend use is read; the decoder, predictor, tokenizer and training
    sections are ignored.  Anything that would change the computation in a way this implementation
    does not reproduce (another model/encoder/frontend class, ``input_layer`` other than
    ``pe_online``, ...) raises :class:`~stepaudio.errors.CheckpointConfigError` naming the key.
    """
    import yaml

    try:
        raw = yaml.safe_load(config_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise CheckpointConfigError(
            f"cannot read {config_path} as YAML ({type(err).__name__}: {err}); re-download the Paraformer folder",
            folder=folder,
            file=config_path,
        ) from err
    if not isinstance(raw, dict):
        raise CheckpointConfigError(
            f"{config_path} does not hold a YAML mapping; it is not a Paraformer config.yaml",
            folder=folder,
            file=config_path,
        )

    def fail(key: str, found: Any, expected: str) -> CheckpointConfigError:
        return CheckpointConfigError(
            f"{config_path}: {key} is {found!r}, expected {expected}; this folder is not the streaming "
            "Paraformer that Step-Audio-Tokenizer ships",
            folder=folder,
            file=config_path,
        )

    for key, expected in _REQUIRED.items():
        if raw.get(key) != expected:
            raise fail(key, raw.get(key), repr(expected))
    if raw.get("normalize") not in (None, "null"):
        raise fail("normalize", raw.get("normalize"), "null (CMVN comes from am.mvn)")
    encoder_conf = raw.get("encoder_conf") or {}
    frontend_conf = raw.get("frontend_conf") or {}
    if not isinstance(encoder_conf, dict) or not isinstance(frontend_conf, dict):
        raise fail("encoder_conf/frontend_conf", type(encoder_conf).__name__, "mappings")
    for key, expected in _ENCODER_FIXED.items():
        value = encoder_conf.get(key, expected)
        if value != expected:
            raise fail(f"encoder_conf.{key}", value, repr(expected))

    def number(conf: dict, section: str, key: str, default: Any, kind: type) -> Any:
        value = conf.get(key, default)
        if kind is bool:
            if not isinstance(value, bool):
                raise fail(f"{section}.{key}", value, "true or false")
            return value
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise fail(f"{section}.{key}", value, f"a non-negative {kind.__name__}")
        if kind is int and int(value) != value:
            raise fail(f"{section}.{key}", value, "an integer")
        return kind(value)

    frontend = ParaformerFrontendConfig(
        fs=number(frontend_conf, "frontend_conf", "fs", 16000, int),
        window=str(frontend_conf.get("window", "hamming")),
        n_mels=number(frontend_conf, "frontend_conf", "n_mels", 80, int),
        frame_length=number(frontend_conf, "frontend_conf", "frame_length", 25, int),
        frame_shift=number(frontend_conf, "frontend_conf", "frame_shift", 10, int),
        lfr_m=number(frontend_conf, "frontend_conf", "lfr_m", 1, int),
        lfr_n=number(frontend_conf, "frontend_conf", "lfr_n", 1, int),
        dither=None if "dither" not in frontend_conf else number(frontend_conf, "frontend_conf", "dither", 0, float),
        snip_edges=number(frontend_conf, "frontend_conf", "snip_edges", True, bool),
    )
    if frontend.fs != 16000:
        raise fail("frontend_conf.fs", frontend.fs, "16000 (Step-Audio feeds 16 kHz audio)")
    if frontend.window not in _WINDOWS:
        raise fail("frontend_conf.window", frontend.window, f"one of {', '.join(_WINDOWS)}")
    if not frontend.snip_edges:
        raise fail("frontend_conf.snip_edges", False, "true (the online frontend frames with snip_edges)")
    if min(frontend.n_mels, frontend.lfr_m, frontend.lfr_n, frontend.frame_length, frontend.frame_shift) < 1:
        raise fail("frontend_conf", frontend_conf, "positive n_mels, lfr_m, lfr_n, frame_length, frame_shift")

    encoder = ParaformerEncoderConfig(
        input_size=frontend.n_mels * frontend.lfr_m,
        output_size=number(encoder_conf, "encoder_conf", "output_size", 256, int),
        attention_heads=number(encoder_conf, "encoder_conf", "attention_heads", 4, int),
        linear_units=number(encoder_conf, "encoder_conf", "linear_units", 2048, int),
        num_blocks=number(encoder_conf, "encoder_conf", "num_blocks", 6, int),
        kernel_size=number(encoder_conf, "encoder_conf", "kernel_size", 11, int),
        sanm_shfit=number(encoder_conf, "encoder_conf", "sanm_shfit", 0, int),
        normalize_before=number(encoder_conf, "encoder_conf", "normalize_before", True, bool),
    )
    if encoder.num_blocks < 1 or encoder.output_size < 1 or encoder.attention_heads < 1:
        raise fail("encoder_conf", encoder_conf, "num_blocks, output_size and attention_heads >= 1")
    if encoder.output_size % encoder.attention_heads:
        raise fail(
            "encoder_conf.output_size", encoder.output_size, f"a multiple of attention_heads={encoder.attention_heads}"
        )
    if encoder.kernel_size < 1 or encoder.kernel_size - 1 < (encoder.kernel_size - 1) // 2 + encoder.sanm_shfit:
        raise fail("encoder_conf.kernel_size/sanm_shfit", (encoder.kernel_size, encoder.sanm_shfit), "a valid pair")
    return encoder, frontend


# ------------------------------------------------------------------------------------------------ model
@dataclass
class EncoderStreamState:
    """What the encoder carries from one stride to the next (batch of clips in lock step).

    Attributes:
        position: frames position-encoded so far (the next frame gets position ``position + 1``).
        overlap: the last ``chunk_size[0] + chunk_size[2]`` position-encoded input frames ``[B, 5, D_in]``.
        keys / values: per layer, cached attention keys / values ``[B, heads, <= look_back * stride, d_k]``
            (``None`` before the first stride).
    """

    position: int
    overlap: torch.Tensor
    keys: list[torch.Tensor | None]
    values: list[torch.Tensor | None]

    def select(self, index: torch.Tensor | list[int]) -> EncoderStreamState:
        """The state of a subset of the batch (rows ``index``)."""

        def pick(tensor: torch.Tensor | None) -> torch.Tensor | None:
            return None if tensor is None else tensor[index]

        return EncoderStreamState(
            self.position, self.overlap[index], [pick(k) for k in self.keys], [pick(v) for v in self.values]
        )


class _FeedForward(nn.Module):
    def __init__(self, size: int, hidden: int) -> None:
        super().__init__()
        self.w_1 = nn.Linear(size, hidden)
        self.w_2 = nn.Linear(hidden, size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w_2(torch.relu(self.w_1(x)))


class _SANMAttention(nn.Module):
    """Self-attention with an FSMN memory branch (names as in the official checkpoint)."""

    def __init__(self, heads: int, in_size: int, size: int, kernel_size: int, sanm_shfit: int) -> None:
        super().__init__()
        self.heads = heads
        self.head_dim = size // heads
        self.linear_q_k_v = nn.Linear(in_size, 3 * size)
        self.linear_out = nn.Linear(size, size)
        self.fsmn_block = nn.Conv1d(size, size, kernel_size, groups=size, bias=False)
        left = (kernel_size - 1) // 2 + sanm_shfit
        self.padding = (left, kernel_size - 1 - left)

    def forward(
        self,
        x: torch.Tensor,
        cached_keys: torch.Tensor | None,
        cached_values: torch.Tensor | None,
        keep_back: int,
        drop_last: int,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        batch, frames, _ = x.shape
        q, k, v = torch.split(self.linear_q_k_v(x), self.heads * self.head_dim, dim=-1)
        q_h = q.reshape(batch, frames, self.heads, self.head_dim).transpose(1, 2)
        k_h = k.reshape(batch, frames, self.heads, self.head_dim).transpose(1, 2)
        v_h = v.reshape(batch, frames, self.heads, self.head_dim).transpose(1, 2)
        k_new, v_new = k_h[:, :, :-drop_last], v_h[:, :, :-drop_last]
        if cached_keys is not None:
            k_h = torch.cat((cached_keys, k_h), dim=2)
            v_h = torch.cat((cached_values, v_h), dim=2)
            k_new = torch.cat((cached_keys, k_new), dim=2)[:, :, -keep_back:]
            v_new = torch.cat((cached_values, v_new), dim=2)[:, :, -keep_back:]
        memory = self.fsmn_block(nn.functional.pad(v.transpose(1, 2), self.padding)).transpose(1, 2) + v
        scores = torch.matmul(q_h * self.head_dim**-0.5, k_h.transpose(-2, -1))
        context = torch.matmul(torch.softmax(scores, dim=-1), v_h)
        context = context.transpose(1, 2).reshape(batch, frames, self.heads * self.head_dim)
        return self.linear_out(context) + memory, k_new, v_new


class _SANMLayer(nn.Module):
    def __init__(self, config: ParaformerEncoderConfig, in_size: int) -> None:
        super().__init__()
        size = config.output_size
        self.residual_attention = in_size == size
        self.normalize_before = config.normalize_before
        self.self_attn = _SANMAttention(config.attention_heads, in_size, size, config.kernel_size, config.sanm_shfit)
        self.feed_forward = _FeedForward(size, config.linear_units)
        self.norm1 = nn.LayerNorm(in_size, eps=LAYER_NORM_EPS)
        self.norm2 = nn.LayerNorm(size, eps=LAYER_NORM_EPS)

    def forward(
        self, x: torch.Tensor, keys: torch.Tensor | None, values: torch.Tensor | None, keep_back: int, drop_last: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        residual = x
        if self.normalize_before:
            x = self.norm1(x)
        attention, keys, values = self.self_attn(x, keys, values, keep_back, drop_last)
        x = residual + attention if self.residual_attention else attention
        if not self.normalize_before:
            x = self.norm1(x)
        residual = x
        if self.normalize_before:
            x = self.norm2(x)
        x = residual + self.feed_forward(x)
        if not self.normalize_before:
            x = self.norm2(x)
        return x, keys, values


class StreamingParaformerEncoder(nn.Module):
    """The streaming Paraformer encoder, run stride by stride (see the module docstring).

    Args:
        config: the ``encoder_conf`` of the folder's ``config.yaml``.
        chunk_size: ``[left, stride, right]`` in LFR frames; Step-Audio uses ``[0, 4, 5]``.
        look_back: strides of cached keys/values each layer attends to; Step-Audio uses 4.
    """

    def __init__(
        self, config: ParaformerEncoderConfig, chunk_size: tuple[int, int, int] = (0, 4, 5), look_back: int = 4
    ) -> None:
        super().__init__()
        if look_back < 1 or chunk_size[2] < 1:
            raise ValueError(f"look_back ({look_back}) and chunk_size[2] ({chunk_size[2]}) must be >= 1")
        self.config = config
        self.chunk_size = tuple(chunk_size)
        self.look_back = look_back
        self.encoders0 = nn.ModuleList([_SANMLayer(config, config.input_size)])
        self.encoders = nn.ModuleList([_SANMLayer(config, config.output_size) for _ in range(config.num_blocks - 1)])
        self.after_norm = nn.LayerNorm(config.output_size, eps=LAYER_NORM_EPS)
        self._inv_timescales: torch.Tensor | None = None

    @property
    def overlap_frames(self) -> int:
        return self.chunk_size[0] + self.chunk_size[2]

    def new_state(self, batch_size: int = 1) -> EncoderStreamState:
        """The state before the first stride: position 0, zero overlap frames, empty caches."""
        layers = 1 + len(self.encoders)
        weight = self.after_norm.weight
        overlap = torch.zeros(batch_size, self.overlap_frames, self.config.input_size, device=weight.device)
        return EncoderStreamState(0, overlap, [None] * layers, [None] * layers)

    def _position_encoding(self, start: int, frames: int, device: torch.device) -> torch.Tensor:
        """Sinusoidal encoding of positions ``start + 1 .. start + frames`` ([sin | cos], float32)."""
        depth = self.config.input_size
        if self._inv_timescales is None:
            increment = torch.log(torch.tensor([10000.0])) / (depth / 2 - 1)
            self._inv_timescales = torch.exp(torch.arange(depth / 2).float() * -increment)
        positions = torch.arange(start + 1, start + frames + 1).float()
        scaled = positions[:, None] * self._inv_timescales[None, :]
        return torch.cat([torch.sin(scaled), torch.cos(scaled)], dim=1).to(device)

    def forward_stride(self, features: torch.Tensor, state: EncoderStreamState) -> torch.Tensor:
        """Encode one stride of LFR features ``[B, n, input_size]``; returns the ``[B, n, output_size]`` outputs.

        ``state`` is updated in place (same batch size and the same ``n`` for every row of the batch).
        """
        frames = features.shape[1]
        x = features * self.config.output_size**0.5
        x = x + self._position_encoding(state.position, frames, x.device)
        state.position += frames
        x = torch.cat((state.overlap, x), dim=1)
        state.overlap = x[:, -self.overlap_frames :]
        keep_back, drop_last = self.look_back * self.chunk_size[1], self.chunk_size[2]
        for index, layer in enumerate([*self.encoders0, *self.encoders]):
            x, state.keys[index], state.values[index] = layer(
                x, state.keys[index], state.values[index], keep_back, drop_last
            )
        if self.config.normalize_before:
            x = self.after_norm(x)
        return x[:, -frames:]

    def expected_shapes(self) -> dict[str, tuple[int, ...]]:
        """Official key (with the ``encoder.`` prefix) -> shape, for strict loading."""
        return {ENCODER_PREFIX + key: tuple(value.shape) for key, value in self.state_dict().items()}


# ------------------------------------------------------------------------------------------------ loading
def _read_model_pt(model_path: Path, folder: Path) -> Mapping[str, torch.Tensor]:
    try:
        checkpoint = torch.load(model_path, map_location="cpu", weights_only=True, mmap=True)
    except (OSError, RuntimeError, EOFError, ValueError) as err:
        raise CheckpointError(
            f"cannot read {model_path} as a PyTorch state dict ({type(err).__name__}: {err}); the file is "
            "truncated or corrupt, re-download it",
            folder=folder,
            file=model_path,
        ) from err
    for wrapper in ("state_dict", "model"):
        if isinstance(checkpoint, dict) and isinstance(checkpoint.get(wrapper), dict):
            checkpoint = checkpoint[wrapper]
    if not isinstance(checkpoint, dict) or not all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
        raise CheckpointError(
            f"{model_path} does not hold a state dict of tensors (found {type(checkpoint).__name__}); "
            "it is not the Paraformer model.pt",
            folder=folder,
            file=model_path,
        )
    return checkpoint


def load_paraformer_encoder(
    paraformer_folder: Path,
    folder: Path,
    device: torch.device,
    chunk_size: tuple[int, int, int] = (0, 4, 5),
    look_back: int = 4,
) -> tuple[StreamingParaformerEncoder, ParaformerFrontendConfig]:
    """Build the encoder from ``config.yaml`` and load the ``encoder.*`` tensors of ``model.pt`` strictly.

    Every ``encoder.*`` key the model needs must be present with its exact shape and none may be left
    over; the decoder, predictor (and any other non-encoder) tensors are not used and not read.

    Raises:
        CheckpointFileNotFoundError / CheckpointConfigError / CheckpointKeyError / CheckpointShapeError /
        CheckpointError: naming the folder, the file and (for tensors) the key.
    """
    config_path, model_path = paraformer_folder / "config.yaml", paraformer_folder / "model.pt"
    for path in (config_path, model_path):
        if not path.is_file():
            raise CheckpointFileNotFoundError(
                f"streaming Paraformer file {path} is missing from the Step-Audio-Tokenizer folder {folder}",
                folder=folder,
                file=path,
            )
    encoder_config, frontend_config = read_paraformer_config(config_path, folder)
    with torch.device("meta"):
        encoder = StreamingParaformerEncoder(encoder_config, chunk_size, look_back)
    expected = encoder.expected_shapes()
    checkpoint = _read_model_pt(model_path, folder)
    found = {key: tuple(value.shape) for key, value in checkpoint.items() if key.startswith(ENCODER_PREFIX)}
    mismatch = find_state_dict_mismatch(expected, found)
    if mismatch is not None:
        more = f" (and {mismatch.other_count} more: {', '.join(mismatch.others)})" if mismatch.other_count else ""
        if mismatch.kind == "shape":
            raise CheckpointShapeError(
                f"{model_path}: tensor {mismatch.key} has shape {list(mismatch.found)} but config.yaml "
                f"({encoder_config}) needs {list(mismatch.expected)}{more}; config.yaml and model.pt do not match",
                folder=folder,
                file=model_path,
                key=mismatch.key,
            )
        what = "is missing from" if mismatch.kind == "missing" else "is not an encoder tensor of the model in"
        raise CheckpointKeyError(
            f"tensor {mismatch.key} {what} {model_path}{more}; config.yaml says {encoder_config.num_blocks} "
            "blocks. The file is incomplete or from another model",
            folder=folder,
            file=model_path,
            key=mismatch.key,
        )
    state = {key[len(ENCODER_PREFIX) :]: checkpoint[key].to(torch.float32) for key in expected}
    encoder = encoder.to_empty(device="cpu")
    encoder.load_state_dict(state, strict=True, assign=True)
    for value in state.values():
        if not torch.isfinite(value).all():
            raise CheckpointError(
                f"{model_path} holds non-finite encoder weights; the file is corrupt, re-download it",
                folder=folder,
                file=model_path,
            )
    return encoder.to(device).eval(), frontend_config
