"""The flow-matching vector-field estimator: CosyVoice's 1-D U-Net ("ConditionalDecoder").

Layout (state-dict prefix ``decoder.estimator.``): a sinusoidal time embedding followed by
``time_mlp`` (``linear_1``, SiLU, ``linear_2``); ``down_blocks`` / ``mid_blocks`` / ``up_blocks``,
each a ``[ResnetBlock1D, [BasicTransformerBlock x n_blocks], resample]`` triple (mid blocks have no
resample); ``final_block`` and ``final_proj``.  Transformer blocks use the diffusers naming
(``norm1``, ``attn1.to_q/to_k/to_v/to_out.0``, ``norm3``, ``ff.net.0.proj``, ``ff.net.2``) without
cross-attention; they are written here because only their parameter names matter, not the library.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ConditionalDecoder"]


def sinusoidal_time_embedding(t: torch.Tensor, dim: int, scale: float = 1000.0) -> torch.Tensor:
    """Embed flow times ``t`` [B] in [0, 1] as [B, dim] (sin half, then cos half)."""
    half = dim // 2
    frequencies = torch.exp(
        torch.arange(half, device=t.device, dtype=torch.float32) * -(math.log(10000.0) / (half - 1))
    )
    angles = scale * t.float().unsqueeze(1) * frequencies.unsqueeze(0)
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


class _TimestepMLP(nn.Module):
    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.linear_1 = nn.Linear(in_dim, out_dim)
        self.linear_2 = nn.Linear(out_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_2(F.silu(self.linear_1(x)))


class _ConvNormMish(nn.Module):
    """``block`` = Conv1d(k3) -> GroupNorm(8) -> Mish, applied to the masked input and re-masked."""

    def __init__(self, dim: int, dim_out: int, groups: int = 8) -> None:
        super().__init__()
        self.block = nn.Sequential(nn.Conv1d(dim, dim_out, 3, padding=1), nn.GroupNorm(groups, dim_out), nn.Mish())

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.block(x * mask) * mask


class _ResnetBlock1D(nn.Module):
    def __init__(self, dim: int, dim_out: int, time_dim: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Mish(), nn.Linear(time_dim, dim_out))
        self.block1 = _ConvNormMish(dim, dim_out)
        self.block2 = _ConvNormMish(dim_out, dim_out)
        self.res_conv = nn.Conv1d(dim, dim_out, 1)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, time: torch.Tensor) -> torch.Tensor:
        h = self.block1(x, mask) + self.mlp(time).unsqueeze(-1)
        h = self.block2(h, mask)
        return h + self.res_conv(x * mask)


class _SelfAttention(nn.Module):
    def __init__(self, dim: int, heads: int, head_dim: int) -> None:
        super().__init__()
        inner = heads * head_dim
        self.heads = heads
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_k = nn.Linear(dim, inner, bias=False)
        self.to_v = nn.Linear(dim, inner, bias=False)
        self.to_out = nn.ModuleList([nn.Linear(inner, dim), nn.Dropout(0.0)])

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None) -> torch.Tensor:
        batch, length, _ = x.shape

        def split(y: torch.Tensor) -> torch.Tensor:
            return y.view(batch, length, self.heads, -1).transpose(1, 2)

        attn_mask = None if key_mask is None else key_mask[:, None, None, :]
        out = F.scaled_dot_product_attention(split(self.to_q(x)), split(self.to_k(x)), split(self.to_v(x)), attn_mask)
        return self.to_out[0](out.transpose(1, 2).reshape(batch, length, -1))


class _GeluProjection(nn.Module):
    def __init__(self, dim: int, dim_out: int) -> None:
        super().__init__()
        self.proj = nn.Linear(dim, dim_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.proj(x))


class _FeedForward(nn.Module):
    def __init__(self, dim: int, mult: int = 4) -> None:
        super().__init__()
        self.net = nn.ModuleList([_GeluProjection(dim, dim * mult), nn.Dropout(0.0), nn.Linear(dim * mult, dim)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.net:
            x = layer(x)
        return x


class _TransformerBlock(nn.Module):
    """Pre-norm self-attention + GELU feed-forward block (diffusers ``BasicTransformerBlock`` names)."""

    def __init__(self, dim: int, heads: int, head_dim: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn1 = _SelfAttention(dim, heads, head_dim)
        self.norm3 = nn.LayerNorm(dim)
        self.ff = _FeedForward(dim)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None) -> torch.Tensor:
        x = x + self.attn1(self.norm1(x), key_mask)
        return x + self.ff(self.norm3(x))


class _Downsample1D(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.conv = nn.Conv1d(dim, dim, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class _Upsample1D(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.conv = nn.ConvTranspose1d(dim, dim, 4, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class ConditionalDecoder(nn.Module):
    """U-Net estimator of the flow velocity ``v(x_t, t | mu, spks, cond)``.

    Args:
        in_channels: channels of the packed input ``[x, mu, spks, cond]`` (4 x mel bins).
        out_channels: mel bins.
        channels: widths of the down blocks (the up path mirrors them).
        attention_head_dim: width of one attention head.
        n_blocks: transformer blocks per U-Net block.
        num_mid_blocks: number of mid blocks.
        num_heads: attention heads.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        channels: tuple[int, ...] | list[int] = (256, 256),
        attention_head_dim: int = 64,
        n_blocks: int = 1,
        num_mid_blocks: int = 2,
        num_heads: int = 4,
    ) -> None:
        super().__init__()
        channels = tuple(channels)
        self.in_channels = in_channels
        time_dim = channels[0] * 4
        self.time_mlp = _TimestepMLP(in_channels, time_dim)

        def transformer_stack(dim: int) -> nn.ModuleList:
            return nn.ModuleList([_TransformerBlock(dim, num_heads, attention_head_dim) for _ in range(n_blocks)])

        self.down_blocks = nn.ModuleList()
        width = in_channels
        for index, out_width in enumerate(channels):
            is_last = index == len(channels) - 1
            resample = nn.Conv1d(out_width, out_width, 3, padding=1) if is_last else _Downsample1D(out_width)
            self.down_blocks.append(
                nn.ModuleList([_ResnetBlock1D(width, out_width, time_dim), transformer_stack(out_width), resample])
            )
            width = out_width
        self.mid_blocks = nn.ModuleList(
            [
                nn.ModuleList([_ResnetBlock1D(channels[-1], channels[-1], time_dim), transformer_stack(channels[-1])])
                for _ in range(num_mid_blocks)
            ]
        )
        up_widths = channels[::-1] + (channels[0],)
        self.up_blocks = nn.ModuleList()
        for index in range(len(up_widths) - 1):
            in_width, out_width = up_widths[index] * 2, up_widths[index + 1]
            is_last = index == len(up_widths) - 2
            resample = nn.Conv1d(out_width, out_width, 3, padding=1) if is_last else _Upsample1D(out_width)
            self.up_blocks.append(
                nn.ModuleList([_ResnetBlock1D(in_width, out_width, time_dim), transformer_stack(out_width), resample])
            )
        self.final_block = _ConvNormMish(channels[-1], channels[-1])
        self.final_proj = nn.Conv1d(channels[-1], out_channels, 1)

    @staticmethod
    def _run_transformers(stack: nn.ModuleList, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        key_mask = None if bool(mask.all()) else mask[:, 0, :].bool()
        h = x.transpose(1, 2)
        for block in stack:
            h = block(h, key_mask)
        return h.transpose(1, 2)

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor,
        mu: torch.Tensor,
        t: torch.Tensor,
        spks: torch.Tensor,
        cond: torch.Tensor,
    ) -> torch.Tensor:
        """Velocity for ``x`` [B, 80, T] at times ``t`` [B]; ``mask`` [B, 1, T]; ``spks`` [B, 80]."""
        time = self.time_mlp(sinusoidal_time_embedding(t, self.in_channels).to(x.dtype))
        spk_frames = spks.unsqueeze(-1).expand(-1, -1, x.shape[-1])
        x = torch.cat([x, mu, spk_frames, cond], dim=1)
        masks = [mask]
        skips = []
        for resnet, transformers, resample in self.down_blocks:
            level_mask = masks[-1]
            x = resnet(x, level_mask, time)
            x = self._run_transformers(transformers, x, level_mask)
            skips.append(x)
            x = resample(x * level_mask)
            masks.append(level_mask[:, :, ::2])
        masks = masks[:-1]
        level_mask = masks[-1]
        for resnet, transformers in self.mid_blocks:
            x = resnet(x, level_mask, time)
            x = self._run_transformers(transformers, x, level_mask)
        for resnet, transformers, resample in self.up_blocks:
            level_mask = masks.pop()
            skip = skips.pop()
            x = torch.cat([x[:, :, : skip.shape[-1]], skip], dim=1)
            x = resnet(x, level_mask, time)
            x = self._run_transformers(transformers, x, level_mask)
            x = resample(x * level_mask)
        x = self.final_block(x, level_mask)
        return self.final_proj(x * level_mask) * mask
