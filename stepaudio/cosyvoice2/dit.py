"""DiT velocity estimator of the Step-Audio-EditX flow (``DiT`` in the recipe, state-dict prefix ``decoder.estimator``).

Input channels are ``[x, mu, speaker, cond]`` (4 x 80 = 320) per mel frame.  ``in_proj`` maps them to the
hidden width; each of ``depth`` blocks applies, with adaLN-Zero modulation from the timestep embedding
(``adaLN_modulation.1``: 9 x hidden), self-attention (``attn``: ``to_q/to_k/to_v`` with bias, per-head
LayerNorm ``q_norm``/``k_norm``, ``proj``; no positional encoding), a causal convolution block (``conv.block.1``
Conv1d k3, ``conv.block.3`` LayerNorm, Mish, ``conv.block.6`` Conv1d k3; left padding only) and a tanh-GELU
MLP (``mlp.fc1``/``mlp.fc2``).  ``final_layer`` = adaLN (2 x hidden) + ``linear`` to 80 channels.  The
timestep embedding (``t_embedder.mlp.0``/``.2``) is sinusoidal (256 channels, t scaled by 1000).

Like the encoder, it runs in chunks with caches (keys/values per block, the last two inputs of each causal
convolution); offline is one chunk, optionally with a boolean attention ``mask`` [T, T_keys].
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["DiT", "DiTCache"]

_NORM_EPS = 1e-6


def _modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale) + shift


class _TimestepEmbedder(nn.Module):
    """``mlp`` = Linear(256 -> H), SiLU, Linear(H -> H) over cos/sin features of ``1000 t``."""

    def __init__(self, hidden: int, frequency_size: int = 256) -> None:
        super().__init__()
        self.frequency_size = frequency_size
        self.mlp = nn.Sequential(nn.Linear(frequency_size, hidden), nn.SiLU(), nn.Linear(hidden, hidden))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        half = self.frequency_size // 2
        frequencies = torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
        angles = (t.float() * 1000)[:, None] * frequencies[None]
        features = torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)
        if self.frequency_size % 2:
            features = torch.cat([features, torch.zeros_like(features[:, :1])], dim=-1)
        return self.mlp(features.to(self.mlp[0].weight.dtype))


class _Attention(nn.Module):
    def __init__(self, dim: int, heads: int, head_dim: int) -> None:
        super().__init__()
        self.heads = heads
        self.head_dim = head_dim
        inner = heads * head_dim
        self.to_q = nn.Linear(dim, inner)
        self.to_k = nn.Linear(dim, inner)
        self.to_v = nn.Linear(dim, inner)
        self.q_norm = nn.LayerNorm(head_dim)
        self.k_norm = nn.LayerNorm(head_dim)
        self.proj = nn.Linear(inner, dim)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        return x.view(x.shape[0], x.shape[1], self.heads, self.head_dim).transpose(1, 2)

    def forward(
        self, x: torch.Tensor, cache: tuple[torch.Tensor, torch.Tensor] | None, mask: torch.Tensor | None
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        query = self.q_norm(self._heads(self.to_q(x)))
        key = self.k_norm(self._heads(self.to_k(x)))
        value = self._heads(self.to_v(x))
        if cache is not None:
            key, value = torch.cat([cache[0], key], dim=2), torch.cat([cache[1], value], dim=2)
        out = F.scaled_dot_product_attention(query, key, value, attn_mask=mask)
        return self.proj(out.transpose(1, 2).reshape(x.shape[0], x.shape[1], -1)), (key, value)


class _CausalConvBlock(nn.Module):
    """``block.1`` causal Conv1d k3, ``block.3`` LayerNorm, Mish, ``block.6`` causal Conv1d k3 (indices as upstream)."""

    def __init__(self, channels: int, kernel_size: int = 3) -> None:
        super().__init__()
        self.channels = channels
        self.context = kernel_size - 1
        conv1 = nn.Conv1d(channels, channels, kernel_size)
        conv2 = nn.Conv1d(channels, channels, kernel_size)
        # parameter-free slots keep the original Sequential's indices (transposes, activation)
        self.block = nn.Sequential(
            nn.Identity(), conv1, nn.Identity(), nn.LayerNorm(channels), nn.Mish(), nn.Identity(), conv2
        )

    def forward(self, x: torch.Tensor, cache: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """``x`` [B, T, C]; ``cache`` [B, 2C, context] (the last inputs of both convolutions)."""
        if cache is None:
            cache = x.new_zeros(x.shape[0], 2 * self.channels, self.context)
        first = torch.cat([cache[:, : self.channels], x.transpose(1, 2)], dim=2)
        hidden = self.block[4](self.block[3](self.block[1](first).transpose(1, 2)))
        second = torch.cat([cache[:, self.channels :], hidden.transpose(1, 2)], dim=2)
        out = self.block[6](second).transpose(1, 2)
        return out, torch.cat([first[:, :, -self.context :], second[:, :, -self.context :]], dim=1)


class _MLP(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


class _DiTBlock(nn.Module):
    def __init__(self, hidden: int, heads: int, head_dim: int, mlp_ratio: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(hidden, elementwise_affine=False, eps=_NORM_EPS)
        self.attn = _Attention(hidden, heads, head_dim)
        self.norm2 = nn.LayerNorm(hidden, elementwise_affine=False, eps=_NORM_EPS)
        self.mlp = _MLP(hidden, int(hidden * mlp_ratio))
        self.norm3 = nn.LayerNorm(hidden, elementwise_affine=False, eps=_NORM_EPS)
        self.conv = _CausalConvBlock(hidden)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden, 9 * hidden))

    def forward(
        self, x: torch.Tensor, c: torch.Tensor, cache: tuple | None, mask: torch.Tensor | None
    ) -> tuple[torch.Tensor, tuple]:
        (shift_a, scale_a, gate_a, shift_m, scale_m, gate_m, shift_c, scale_c, gate_c) = self.adaLN_modulation(c).chunk(
            9, dim=-1
        )
        kv_cache, conv_cache = cache if cache is not None else (None, None)
        attended, kv = self.attn(_modulate(self.norm1(x), shift_a, scale_a), kv_cache, mask)
        x = x + gate_a * attended
        convolved, conv = self.conv(_modulate(self.norm3(x), shift_c, scale_c), conv_cache)
        x = x + gate_c * convolved
        x = x + gate_m * self.mlp(_modulate(self.norm2(x), shift_m, scale_m))
        return x, (kv, conv)


class _FinalLayer(nn.Module):
    def __init__(self, hidden: int, out_channels: int) -> None:
        super().__init__()
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden, 2 * hidden))
        self.norm_final = nn.LayerNorm(hidden, elementwise_affine=False, eps=_NORM_EPS)
        self.linear = nn.Linear(hidden, out_channels)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=-1)
        return self.linear(_modulate(self.norm_final(x), shift, scale))


@dataclass
class DiTCache:
    """Per-block ``((keys, values), conv inputs)`` after the chunks seen so far (empty list: none yet)."""

    blocks: list[tuple] = field(default_factory=list)


class DiT(nn.Module):
    """The velocity estimator; constructor arguments follow the recipe's ``DiT`` entry."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        mlp_ratio: float = 4.0,
        depth: int = 28,
        num_heads: int = 8,
        head_dim: int = 64,
        hidden_size: int = 256,
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.t_embedder = _TimestepEmbedder(hidden_size)
        self.in_proj = nn.Linear(in_channels, hidden_size)
        self.blocks = nn.ModuleList([_DiTBlock(hidden_size, num_heads, head_dim, mlp_ratio) for _ in range(depth)])
        self.final_layer = _FinalLayer(hidden_size, out_channels)

    def forward(
        self,
        x: torch.Tensor,
        mu: torch.Tensor,
        t: torch.Tensor,
        spks: torch.Tensor,
        cond: torch.Tensor,
        cache: DiTCache | None = None,
        mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, DiTCache]:
        """Velocity [B, out, T] of one chunk's frames; ``x``/``mu``/``cond`` [B, 80, T], ``spks`` [B, 80], ``t`` [B].

        Returns the velocity and the cache extended by this chunk (keys/values of every frame kept).
        """
        c = self.t_embedder(t).unsqueeze(1)
        features = torch.cat([x, mu, spks.unsqueeze(2).expand(-1, -1, x.shape[2]), cond], dim=1)
        hidden = self.in_proj(features.transpose(1, 2))
        blocks = []
        for index, block in enumerate(self.blocks):
            hidden, block_cache = block(hidden, c, cache.blocks[index] if cache and cache.blocks else None, mask)
            blocks.append(block_cache)
        return self.final_layer(hidden, c).transpose(1, 2), DiTCache(blocks)
