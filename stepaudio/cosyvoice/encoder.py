"""Conformer encoder of the CosyVoice flow model (espnet-style relative-position self-attention).

Configuration used by CosyVoice-300M(-25Hz): linear input layer (``embed.out`` = Linear + LayerNorm),
``rel_pos_espnet`` positional encoding, ``rel_selfattn`` attention with ``pos_bias_u``/``pos_bias_v``,
pre-norm blocks (``norm_mha``, ``norm_ff``) without macaron feed-forward and without convolution
module, swish feed-forward, final ``after_norm``.  Batch size 1 without padding is the inference
case; a boolean key mask is still honoured so padded batches work.
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["ConformerEncoder", "RelPositionSelfAttention", "relative_encoding", "relative_position_encoding"]

_LAYER_NORM_EPS = 1e-5


def relative_encoding(positions: torch.Tensor, dim: int) -> torch.Tensor:
    """espnet sinusoidal encoding of integer relative ``positions`` [N] -> [N, dim] (sin on even, cos on odd)."""
    frequencies = torch.exp(
        torch.arange(0, dim, 2, dtype=torch.float32, device=positions.device) * -(math.log(10000.0) / dim)
    )
    angles = positions.to(torch.float32).unsqueeze(1) * frequencies
    encoding = torch.zeros(positions.shape[0], dim, dtype=torch.float32, device=positions.device)
    encoding[:, 0::2] = torch.sin(angles)
    encoding[:, 1::2] = torch.cos(angles)
    return encoding


def relative_position_encoding(length: int, dim: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Sinusoidal encodings of the relative positions ``length-1, ..., 0, ..., -(length-1)``.

    Returns:
        Tensor [1, 2*length-1, dim]; row ``r`` encodes relative position ``length-1-r``.
    """
    positions = torch.arange(length - 1, -length, -1, device=device, dtype=torch.float32)
    return relative_encoding(positions, dim).unsqueeze(0).to(dtype)


class RelPositionSelfAttention(nn.Module):
    """Multi-head self-attention with relative positions (Transformer-XL style, espnet variant).

    ``key_bias=False`` drops the bias of ``linear_k`` (a recipe setting of the 24 kHz encoder).
    """

    def __init__(self, heads: int, dim: int, key_bias: bool = True) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"attention width {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.head_dim = dim // heads
        self.linear_q = nn.Linear(dim, dim)
        self.linear_k = nn.Linear(dim, dim, bias=key_bias)
        self.linear_v = nn.Linear(dim, dim)
        self.linear_out = nn.Linear(dim, dim)
        self.linear_pos = nn.Linear(dim, dim, bias=False)
        self.pos_bias_u = nn.Parameter(torch.zeros(heads, self.head_dim))
        self.pos_bias_v = nn.Parameter(torch.zeros(heads, self.head_dim))

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, _ = x.shape
        return x.view(batch, length, self.heads, self.head_dim)

    def forward(self, x: torch.Tensor, pos_emb: torch.Tensor, key_mask: torch.Tensor | None) -> torch.Tensor:
        """Attend over ``x`` [B, T, D]; ``pos_emb`` [1, 2T-1, D]; ``key_mask`` [B, T] bool (True = keep)."""
        batch, length, _ = x.shape
        query = self._split(self.linear_q(x))  # B T H d
        key = self._split(self.linear_k(x)).transpose(1, 2)  # B H T d
        value = self._split(self.linear_v(x)).transpose(1, 2)
        position = self._split(self.linear_pos(pos_emb)).transpose(1, 2)  # 1 H 2T-1 d
        content = torch.matmul((query + self.pos_bias_u).transpose(1, 2), key.transpose(-2, -1))
        positional = torch.matmul((query + self.pos_bias_v).transpose(1, 2), position.transpose(-2, -1))
        # scores[i, j] use the encoding of relative position i - j, stored at row (T-1) - i + j.
        rows = torch.arange(length, device=x.device)
        index = (length - 1 - rows).unsqueeze(1) + rows.unsqueeze(0)  # T x T
        positional = positional.gather(-1, index.expand(batch, self.heads, length, length))
        scores = (content + positional) / math.sqrt(self.head_dim)
        if key_mask is not None:
            keep = key_mask[:, None, None, :]
            scores = scores.masked_fill(~keep, torch.finfo(scores.dtype).min)
            weights = torch.softmax(scores, dim=-1).masked_fill(~keep, 0.0)
        else:
            weights = torch.softmax(scores, dim=-1)
        attended = torch.matmul(weights, value).transpose(1, 2).reshape(batch, length, -1)
        return self.linear_out(attended)


class _FeedForward(nn.Module):
    """Swish feed-forward ``w_2(silu(w_1(x)))`` of a conformer block (also the 24 kHz encoder's)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.w_1 = nn.Linear(dim, hidden)
        self.w_2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w_2(nn.functional.silu(self.w_1(x)))


class _ConformerBlock(nn.Module):
    """Pre-norm block: x + MHSA(LN(x)), then x + FFN(LN(x))."""

    def __init__(self, dim: int, heads: int, hidden: int) -> None:
        super().__init__()
        self.self_attn = RelPositionSelfAttention(heads, dim)
        self.feed_forward = _FeedForward(dim, hidden)
        self.norm_mha = nn.LayerNorm(dim, eps=_LAYER_NORM_EPS)
        self.norm_ff = nn.LayerNorm(dim, eps=_LAYER_NORM_EPS)

    def forward(self, x: torch.Tensor, pos_emb: torch.Tensor, key_mask: torch.Tensor | None) -> torch.Tensor:
        x = x + self.self_attn(self.norm_mha(x), pos_emb, key_mask)
        return x + self.feed_forward(self.norm_ff(x))


class _LinearInput(nn.Module):
    """``embed.out`` = Linear + LayerNorm (``eps``), then scaling by sqrt(dim) (positions are relative).

    Also the 24 kHz encoder's ``embed`` / ``up_embed`` (:mod:`stepaudio.cosyvoice2.encoder`).
    """

    def __init__(self, input_size: int, dim: int, eps: float = _LAYER_NORM_EPS) -> None:
        super().__init__()
        self.out = nn.Sequential(nn.Linear(input_size, dim), nn.LayerNorm(dim, eps=eps))
        self.scale = math.sqrt(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(x) * self.scale


class ConformerEncoder(nn.Module):
    """The flow model's token encoder (state-dict prefix ``encoder.``).

    Args:
        input_size: width of the token embeddings.
        output_size: model width.
        attention_heads: number of heads.
        linear_units: feed-forward hidden width.
        num_blocks: number of conformer blocks.
    """

    def __init__(
        self, input_size: int, output_size: int, attention_heads: int, linear_units: int, num_blocks: int
    ) -> None:
        super().__init__()
        self.output_size = output_size
        self.embed = _LinearInput(input_size, output_size)
        self.encoders = nn.ModuleList(
            [_ConformerBlock(output_size, attention_heads, linear_units) for _ in range(num_blocks)]
        )
        self.after_norm = nn.LayerNorm(output_size, eps=_LAYER_NORM_EPS)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Encode ``x`` [B, T, input_size] to [B, T, output_size]; ``key_mask`` [B, T] marks real frames."""
        x = self.embed(x)
        pos_emb = relative_position_encoding(x.shape[1], self.output_size, x.device, x.dtype)
        for block in self.encoders:
            x = block(x, pos_emb, key_mask)
        return self.after_norm(x)
