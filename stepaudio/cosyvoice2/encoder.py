"""Upsampling conformer encoder of the Step-Audio-EditX flow (``UpsampleConformerEncoderV2`` in the recipe).

Structure (state-dict names under ``encoder.``): ``embed.out`` (Linear + LayerNorm, output scaled by
sqrt(width)), ``pre_lookahead_layer`` (``conv1`` looks ``pre_lookahead_len`` steps ahead, ``conv2`` is
causal with kernel 3, residual), ``encoders`` (pre-norm conformer blocks: relative-position
self-attention and a swish feed-forward, no macaron, no convolution module), ``up_layer`` (nearest
x2 repeat then a causal conv with kernel ``2 * stride + 1``), ``up_embed.out``, ``up_encoders`` and
``after_norm``.  Tokens come at 25 steps/s; the output is at 50 frames/s (the mel rate).

Every layer runs in *chunks* with caches (keys/values of earlier steps, the last inputs of the causal
convolutions), which is how the original streams.  The offline pass is one chunk holding everything;
an optional boolean ``mask`` [T, T] (True = may attend) restricts attention, so an offline pass can
reproduce the chunk-by-chunk attention of a stream exactly (see :func:`chunk_causal_mask`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ..cosyvoice.encoder import RelPositionSelfAttention, _FeedForward, _LinearInput, relative_encoding

__all__ = ["EncoderCache", "UpsampleConformerEncoder", "chunk_causal_mask", "relative_encoding"]

_EMBED_EPS = 1e-5  # LinearNoSubsampling's LayerNorm and after_norm
_BLOCK_EPS = 1e-12  # norm_mha / norm_ff of the conformer blocks


def chunk_causal_mask(chunk_lengths: list[int], repeat: int = 1, device: torch.device | None = None) -> torch.Tensor:
    """[T, T] bool: step ``i`` may attend to step ``j`` when ``j``'s chunk is not after ``i``'s.

    Args:
        chunk_lengths: consecutive chunk sizes (the first chunk is the prompt).
        repeat: each step stands for ``repeat`` positions (2 after the encoder's upsampling).
    """
    ids = torch.repeat_interleave(
        torch.arange(len(chunk_lengths), device=device), torch.tensor(chunk_lengths, device=device) * repeat
    )
    return ids.unsqueeze(1) >= ids.unsqueeze(0)


class RelPositionAttention(RelPositionSelfAttention):
    """Multi-head self-attention with espnet relative positions, over cached keys/values plus the new steps.

    Same layers as the 22.05 kHz encoder's :class:`~stepaudio.cosyvoice.encoder.RelPositionSelfAttention`
    (``key_bias`` chooses whether ``linear_k`` has a bias); the forward pass adds the key/value cache.
    """

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        return x.view(x.shape[0], x.shape[1], self.heads, self.head_dim).transpose(1, 2)  # B H T d

    def forward(
        self, x: torch.Tensor, cache: tuple[torch.Tensor, torch.Tensor] | None, mask: torch.Tensor | None
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """``x`` [B, T, D] are the steps after the ``C`` cached ones; returns output and keys/values [B, H, C+T, d]."""
        batch, length, _ = x.shape
        query = self._heads(self.linear_q(x))
        key, value = self._heads(self.linear_k(x)), self._heads(self.linear_v(x))
        if cache is not None:
            key, value = torch.cat([cache[0], key], dim=2), torch.cat([cache[1], value], dim=2)
        cached = key.shape[2] - length
        # relative position of query i (absolute cached + i) to key j is cached + i - j, from cached+T-1 down to 1-T
        relative = torch.arange(cached + length - 1, -length, -1, device=x.device)
        position = self._heads(self.linear_pos(relative_encoding(relative, x.shape[2]).to(x.dtype)).unsqueeze(0))
        content = torch.matmul(query + self.pos_bias_u[:, None], key.transpose(-2, -1))
        positional = torch.matmul(query + self.pos_bias_v[:, None], position.transpose(-2, -1))
        rows = torch.arange(length, device=x.device).unsqueeze(1)
        index = (length - 1 - rows) + torch.arange(cached + length, device=x.device).unsqueeze(0)
        positional = positional.gather(-1, index.expand(batch, self.heads, length, cached + length))
        scores = (content + positional) / math.sqrt(self.head_dim)
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        weights = torch.softmax(scores, dim=-1)
        attended = torch.matmul(weights, value).transpose(1, 2).reshape(batch, length, -1)
        return self.linear_out(attended), (key, value)


class _ConformerBlock(nn.Module):
    """Pre-norm block (LayerNorm eps 1e-12): x + MHSA(LN(x)), then x + FFN(LN(x))."""

    def __init__(self, dim: int, heads: int, hidden: int, key_bias: bool) -> None:
        super().__init__()
        self.self_attn = RelPositionAttention(heads, dim, key_bias)
        self.feed_forward = _FeedForward(dim, hidden)
        self.norm_mha = nn.LayerNorm(dim, eps=_BLOCK_EPS)
        self.norm_ff = nn.LayerNorm(dim, eps=_BLOCK_EPS)

    def forward(
        self, x: torch.Tensor, cache: tuple[torch.Tensor, torch.Tensor] | None, mask: torch.Tensor | None
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        attended, new_cache = self.self_attn(self.norm_mha(x), cache, mask)
        x = x + attended
        return x + self.feed_forward(self.norm_ff(x)), new_cache


class _PreLookahead(nn.Module):
    """``conv1`` over each step and its ``lookahead`` successors, leaky ReLU, causal ``conv2`` (kernel 3), residual."""

    def __init__(self, channels: int, lookahead: int) -> None:
        super().__init__()
        self.lookahead = lookahead
        self.conv1 = nn.Conv1d(channels, channels, lookahead + 1)
        self.conv2 = nn.Conv1d(channels, channels, 3)

    def forward(self, x: torch.Tensor, cache: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """``x`` [B, T + lookahead, C] (future steps appended) -> ([B, T, C], last two conv1 outputs [B, C, 2])."""
        hidden = F.leaky_relu(self.conv1(x.transpose(1, 2)))
        if cache is None:
            cache = hidden.new_zeros(hidden.shape[0], hidden.shape[1], 2)
        joined = torch.cat([cache, hidden], dim=2)
        out = self.conv2(joined).transpose(1, 2)
        return out + x[:, : x.shape[1] - self.lookahead], joined[:, :, -2:]


class _Upsample(nn.Module):
    """Nearest repeat by ``stride``, then a causal Conv1d with kernel ``2 * stride + 1`` (state-dict ``conv``)."""

    def __init__(self, channels: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        self.conv = nn.Conv1d(channels, channels, 2 * stride + 1)

    def forward(self, x: torch.Tensor, cache: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """``x`` [B, C, T] -> ([B, C, T * stride], the last ``2 * stride`` repeated inputs)."""
        repeated = torch.repeat_interleave(x, self.stride, dim=2)
        if cache is None:
            cache = repeated.new_zeros(repeated.shape[0], repeated.shape[1], 2 * self.stride)
        joined = torch.cat([cache, repeated], dim=2)
        return self.conv(joined), joined[:, :, -2 * self.stride :]


@dataclass
class EncoderCache:
    """What :meth:`UpsampleConformerEncoder.forward` keeps between chunks (empty = start of the sequence)."""

    lookahead_conv: torch.Tensor | None = None
    upsample_conv: torch.Tensor | None = None
    blocks: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list)
    up_blocks: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list)


class UpsampleConformerEncoder(nn.Module):
    """Token steps [B, T, input_size] -> frames [B, stride * T, output_size] (state-dict prefix ``encoder.``)."""

    def __init__(
        self,
        input_size: int,
        output_size: int,
        attention_heads: int,
        linear_units: int,
        num_blocks: int,
        num_up_blocks: int,
        pre_lookahead_len: int,
        up_stride: int,
        key_bias: bool = True,
    ) -> None:
        super().__init__()
        if input_size != output_size:
            raise ValueError(f"input_size {input_size} must equal output_size {output_size} (up_embed reads both)")
        self.output_size = output_size
        self.pre_lookahead_len = pre_lookahead_len
        self.up_stride = up_stride
        self.embed = _LinearInput(input_size, output_size, _EMBED_EPS)
        self.pre_lookahead_layer = _PreLookahead(output_size, pre_lookahead_len)
        self.encoders = nn.ModuleList(
            [_ConformerBlock(output_size, attention_heads, linear_units, key_bias) for _ in range(num_blocks)]
        )
        self.up_layer = _Upsample(output_size, up_stride)
        self.up_embed = _LinearInput(input_size, output_size, _EMBED_EPS)
        self.up_encoders = nn.ModuleList(
            [_ConformerBlock(output_size, attention_heads, linear_units, key_bias) for _ in range(num_up_blocks)]
        )
        self.after_norm = nn.LayerNorm(output_size, eps=_EMBED_EPS)

    def forward(
        self,
        steps: torch.Tensor,
        lookahead: torch.Tensor | None = None,
        cache: EncoderCache | None = None,
        mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, EncoderCache]:
        """Encode ``steps`` (a chunk) given the cache of every earlier chunk.

        Args:
            steps: token embeddings [B, T, input_size] of this chunk.
            lookahead: embeddings of up to ``pre_lookahead_len`` following steps; missing ones (end of the
                sequence) are zeros after the input layer, as in the original.
            cache: state after the previous chunks (None: this is the first chunk).
            mask: [T, T] bool step mask within this chunk (offline replay of a chunked stream), or None.

        Returns:
            (frames [B, stride * T, output_size], the cache including this chunk).
        """
        cache = cache or EncoderCache()
        length = steps.shape[1]
        joined = steps if lookahead is None else torch.cat([steps, lookahead], dim=1)
        x = self.embed(joined)
        missing = length + self.pre_lookahead_len - x.shape[1]
        if missing > 0:
            x = F.pad(x, (0, 0, 0, missing))
        x, lookahead_conv = self.pre_lookahead_layer(x[:, : length + self.pre_lookahead_len], cache.lookahead_conv)
        blocks = []
        for index, block in enumerate(self.encoders):
            x, kv = block(x, cache.blocks[index] if cache.blocks else None, mask)
            blocks.append(kv)
        x, upsample_conv = self.up_layer(x.transpose(1, 2), cache.upsample_conv)
        x = self.up_embed(x.transpose(1, 2))
        up_mask = None
        if mask is not None:
            up_mask = mask.repeat_interleave(self.up_stride, 0).repeat_interleave(self.up_stride, 1)
        up_blocks = []
        for index, block in enumerate(self.up_encoders):
            x, kv = block(x, cache.up_blocks[index] if cache.up_blocks else None, up_mask)
            up_blocks.append(kv)
        return self.after_norm(x), EncoderCache(lookahead_conv, upsample_conv, blocks, up_blocks)
